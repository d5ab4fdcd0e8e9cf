// Package operate is the one application layer for operator actions: the CLI, the HTTP API and the dashboard call it with an actor.
package operate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
)

// Store is the part of the run ledger operations use. Implementations must be safe for
// concurrent use: a server calls them from many requests at once.
type Store interface {
	engine.Store
	// Decide writes an operator's decision (attempt, review, transition) in one commit, or
	// nothing when the run is no longer in the state the change leaves.
	Decide(ctx context.Context, d ledger.Decision) error
	AddNote(ctx context.Context, runID, actor, text string) error
	Notes(ctx context.Context, runID string) ([]domain.Note, error)
	ModelCalls(ctx context.Context, runID string) ([]ledger.CallRecord, error)
	ListRuns(ctx context.Context, f ledger.RunFilter) ([]*domain.Run, error)
	SetPipelineDisabled(ctx context.Context, pipeline string, disabled bool, reason, actor string) error
	Pipelines(ctx context.Context) ([]ledger.PipelineRow, error)
	SwitchHistory(ctx context.Context, pipeline string, limit int) ([]ledger.Switch, error)
	ExpireWaits(ctx context.Context, actor string) (int, error)
	Stats(ctx context.Context, since time.Time, pipeline string) ([]ledger.PipelineStats, error)
	LatestSpec(ctx context.Context, pipeline string) (text, path string, err error)
	// Description names the ledger in messages ("no run X in sqlite:...").
	Description() string
}

// Providers resolves a step's model provider by name.
type Providers = func(string) (llm.Provider, error)

// EngineBuilder builds an engine that records actor on the events it writes. Nil providers
// means the configured model providers.
type EngineBuilder func(actor string, v *dsl.Validator, providers Providers) (*engine.Engine, error)

// Ops carries what every operation needs. Its methods are safe for concurrent use.
type Ops struct {
	Store     Store
	NewEngine EngineBuilder
	// Secrets resolves a pipeline's declared secrets; it is needed only to execute a run in
	// this process.
	Secrets func(p *domain.Pipeline) (map[string]string, error)
	// ForbidSelfApproval refuses an approval by the actor that created the run.
	ForbidSelfApproval bool
	// Validator, when set, parses stored specs; otherwise one is built on first use (notes,
	// listings and the kill switch never parse a spec).
	Validator *dsl.Validator

	vMu sync.Mutex
}

// Kind says why an operation did not happen; the CLI maps it to an exit code, the API to an
// HTTP status.
type Kind int

// The kinds of failure.
const (
	// KindFailed: something broke, or the run failed.
	KindFailed Kind = iota
	// KindNotFound: no such run.
	KindNotFound
	// KindInvalid: the request itself is malformed.
	KindInvalid
	// KindRefused: the run's state (or a rule) does not allow the action; nothing was changed.
	KindRefused
	// KindInputSchema: the run input does not match the pipeline's inputs schema.
	KindInputSchema
	// KindConflict: the idempotency key belongs to a run with another input.
	KindConflict
	// KindDisabled: the pipeline's kill switch is thrown.
	KindDisabled
	// KindForbidden: the actor may not do this (self-approval).
	KindForbidden
)

// Error is an operation's failure with its kind; its message is the one the CLI prints.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// KindOf classifies any error an operation returned.
func KindOf(err error) Kind {
	var oe *Error
	switch {
	case errors.As(err, &oe):
		return oe.Kind
	case errors.Is(err, engine.ErrIdempotencyConflict):
		return KindConflict
	case errors.Is(err, engine.ErrSpecChanged):
		return KindRefused
	case errors.Is(err, engine.ErrDisabled):
		return KindDisabled
	case errors.Is(err, domain.ErrNotFound):
		return KindNotFound
	case errors.Is(err, domain.ErrStateConflict):
		return KindRefused
	}
	return KindFailed
}

func errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// refused is the error of an action the run's state does not allow: nothing changed.
func refused(format string, args ...any) error {
	return errorf(KindRefused, format+"; nothing was changed", args...)
}

// decisionError explains a decision that lost a race: the run changed meanwhile.
func decisionError(r *domain.Run, err error) error {
	if errors.Is(err, domain.ErrStateConflict) {
		return refused("run %s changed while deciding (%v)", r.ID, err)
	}
	return err
}

// validator returns the pipeline validator, building it on first use.
func (o *Ops) validator() (*dsl.Validator, error) {
	o.vMu.Lock()
	defer o.vMu.Unlock()
	if o.Validator == nil {
		v, err := dsl.NewValidator()
		if err != nil {
			return nil, err
		}
		o.Validator = v
	}
	return o.Validator, nil
}

// Engine builds an engine acting for actor.
func (o *Ops) Engine(actor string, providers Providers) (*engine.Engine, error) {
	v, err := o.validator()
	if err != nil {
		return nil, err
	}
	return o.NewEngine(actor, v, providers)
}

// ExpireWaits dead-letters the runs whose wait deadline passed while nobody was looking, so
// that no decision is taken on them.
func (o *Ops) ExpireWaits(ctx context.Context) error {
	_, err := o.Store.ExpireWaits(ctx, "pipectl (wait timeout)")
	return err
}

// Run loads a run by id (or unique id prefix).
func (o *Ops) Run(ctx context.Context, id string) (*domain.Run, error) {
	r, err := o.Store.GetRun(ctx, id)
	switch {
	case errors.Is(err, domain.ErrNotFound) && len(id) < ledger.MinRunIDPrefix:
		return nil, errorf(KindNotFound, "no run %s in %s, and %q is too short for a run id prefix: give at least %d characters", id, o.Store.Description(), id, ledger.MinRunIDPrefix)
	case errors.Is(err, domain.ErrNotFound):
		return nil, errorf(KindNotFound, "no run %s in %s", id, o.Store.Description())
	case errors.Is(err, domain.ErrAmbiguous):
		return nil, errorf(KindInvalid, "%v", err)
	}
	return r, err
}

// Spec parses the pipeline text a run stored; a run continues with the spec it started with.
func (o *Ops) Spec(r *domain.Run) (*domain.Pipeline, error) {
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
		return nil, errorf(KindFailed, "run %s: %s", r.ID, msg)
	}
	return p, nil
}

// StoredInput decodes a run's stored input, with numbers as the inputs schema declares them.
func StoredInput(p *domain.Pipeline, r *domain.Run) (any, error) {
	in, err := domain.DecodeJSON(r.Input)
	if err != nil {
		return nil, fmt.Errorf("run %s: stored input: %w", r.ID, err)
	}
	return coerceInput(p, in), nil
}

// heldLease is how an operator takes a run it will continue itself, or hands it to workers
// (enqueue: an expired lease that any worker takes over).
func heldLease(enqueue bool, eng *engine.Engine) (string, time.Time) {
	if enqueue {
		return "", domain.LeaseHandedBack
	}
	return eng.Owner.String(), time.Now().Add(eng.LeaseTTL)
}
