package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
)

// operator bundles what the commands that act on existing runs share.
type operator struct {
	a     *app
	store *ledger.Store
	v     *dsl.Validator
}

func (a *app) operator(ctx context.Context) (*operator, error) {
	store, err := a.openLedger(ctx)
	if err != nil {
		return nil, err
	}
	// A wait whose deadline passed while nobody was looking ends here, before any decision.
	if _, err := store.ExpireWaits(ctx, "pipectl (wait timeout)"); err != nil {
		store.Close()
		return nil, err
	}
	return &operator{a: a, store: store}, nil
}

// validator builds the pipeline validator on first use: notes, listings and the kill switch
// never parse a spec.
func (o *operator) validator() (*dsl.Validator, error) {
	if o.v == nil {
		v, err := dsl.NewValidator()
		if err != nil {
			return nil, err
		}
		o.v = v
	}
	return o.v, nil
}

func (o *operator) Close() { o.store.Close() }

// run loads a run or fails with exit 1 naming the ledger.
func (o *operator) run(ctx context.Context, id string) (*domain.Run, error) {
	r, err := o.store.GetRun(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
		return nil, &exitError{code: domain.ExitFailed, err: fmt.Errorf("no run %s in %s", id, o.store.Description())}
	}
	return r, err
}

// spec parses the pipeline text a run stored; a run continues with the spec it started with.
func (o *operator) spec(r *domain.Run) (*domain.Pipeline, error) {
	v, err := o.validator()
	if err != nil {
		return nil, err
	}
	p, diags := v.Parse(r.SpecPath, []byte(r.SpecText))
	if p == nil {
		msg := "the stored spec no longer validates"
		if len(diags) > 0 {
			msg += ": " + diags[0].String()
		}
		return nil, &exitError{code: domain.ExitFailed, err: fmt.Errorf("run %s: %s", r.ID, msg)}
	}
	return p, nil
}

func (o *operator) input(p *domain.Pipeline, r *domain.Run) (any, error) {
	in, err := domain.DecodeJSON(r.Input)
	if err != nil {
		return nil, fmt.Errorf("run %s: stored input: %w", r.ID, err)
	}
	if p.Inputs != nil {
		in = gate.Coerce(p.Inputs.Doc, in)
	}
	return in, nil
}

// engine builds an engine for continuing runs, with the configured model providers (or the
// given ones).
func (o *operator) engine(providers func(string) (llm.Provider, error)) (*engine.Engine, error) {
	log, err := o.a.logger()
	if err != nil {
		return nil, err
	}
	if providers == nil {
		if providers, err = o.a.modelProviders("", ""); err != nil {
			return nil, err
		}
	}
	v, err := o.validator()
	if err != nil {
		return nil, err
	}
	eng := o.a.newEngine(o.store, v, log, providers, nil)
	o.a.logConfig(log, eng, o.store, map[string]any{"command": "operator"})
	return eng, nil
}

// continueRun executes a run put back in motion, in this process, until it ends or pauses, and
// reports it like pipectl run.
func (o *operator) continueRun(ctx context.Context, r *domain.Run) error {
	p, err := o.spec(r)
	if err != nil {
		return err
	}
	input, err := o.input(p, r)
	if err != nil {
		return err
	}
	secrets, err := resolveSecrets(p)
	if err != nil {
		return &exitError{code: domain.ExitUsage, err: err}
	}
	eng, err := o.engine(nil)
	if err != nil {
		return err
	}
	started := time.Now()
	final, err := eng.Continue(ctx, p, r, input, engine.RunOptions{Secrets: secrets})
	return o.a.reportRun(&engine.Result{Run: final}, err, time.Since(started))
}

// refused is the exit for an operator action the run's state does not allow: nothing changed.
func refused(format string, args ...any) error {
	return &exitError{code: domain.ExitRefused, err: fmt.Errorf(format+"; nothing was changed", args...)}
}

// heldLease is how an operator command takes a run it will continue itself, or hands it to
// workers (--enqueue: an expired lease that any worker takes over).
func (o *operator) heldLease(enqueue bool, eng *engine.Engine) (string, time.Time) {
	if enqueue {
		return "", time.UnixMilli(1)
	}
	return eng.Owner.String(), time.Now().Add(eng.LeaseTTL)
}
