package main

import (
	"context"
	"errors"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// operator is the operations layer wired to this command's ledger, engine and environment.
type operator struct {
	*operate.Ops
	a     *app
	store *ledger.Store
}

// operator opens the ledger and wires the operations layer to it; commands that act on runs
// go through it so that they record what the API records.
func (a *app) operator(ctx context.Context) (*operator, error) {
	a.showProgress()
	store, err := a.openLedger(ctx)
	if err != nil {
		return nil, err
	}
	o := &operator{a: a, store: store, Ops: a.ops(store, map[string]any{"command": "operator"})}
	// A wait whose deadline passed while nobody was looking ends here, before any decision.
	if err := o.ExpireWaits(ctx); err != nil {
		store.Close()
		return nil, err
	}
	return o, nil
}

// ops wires the operations layer: the engine builder knows the configured model providers and
// logs the effective configuration with the logged fields; secrets come from the environment.
func (a *app) ops(store *ledger.Store, logged map[string]any) *operate.Ops {
	return &operate.Ops{
		Store:   store,
		Secrets: a.resolveSecrets,
		NewEngine: func(actor string, v *dsl.Validator, providers operate.Providers) (*engine.Engine, error) {
			log, err := a.logger()
			if err != nil {
				return nil, err
			}
			if providers == nil {
				if providers, err = a.modelProviders("", ""); err != nil {
					return nil, err
				}
			}
			eng := a.newEngine(store, v, log, providers, nil)
			eng.Actor = actor
			if logged != nil {
				a.logConfig(log, eng, store, logged)
			}
			return eng, nil
		},
	}
}

func (o *operator) Close() { o.store.Close() }

// continueRun executes a run put back in motion, in this process, until it ends or pauses, and
// reports it like pipectl run.
func (o *operator) continueRun(ctx context.Context, r *domain.Run) error {
	started := time.Now()
	final, err := o.Continue(ctx, o.a.g.actorName(), r)
	if final == nil && err != nil {
		return opError(err)
	}
	return o.a.reportRun(&engine.Result{Run: final}, err, time.Since(started))
}

// opError gives an operation's failure its exit code: refusals change nothing (4), a missing
// run or a failed one is 1, a malformed request 2.
func opError(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	var oe *operate.Error
	switch operate.KindOf(err) {
	case operate.KindRefused, operate.KindConflict, operate.KindDisabled, operate.KindForbidden:
		return &exitError{code: domain.ExitRefused, err: err}
	case operate.KindInvalid, operate.KindNotFound:
		// Naming something that does not exist is a usage error: nothing was looked at, let
		// alone run (docs/operations.md, exit codes).
		return &exitError{code: domain.ExitUsage, err: err}
	case operate.KindInputSchema:
		return &exitError{code: domain.ExitFailed, err: err}
	}
	if errors.As(err, &oe) {
		return &exitError{code: domain.ExitFailed, err: err}
	}
	return err
}
