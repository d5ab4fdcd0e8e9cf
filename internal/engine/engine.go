// Package engine executes runs: the step graph, attempts, retries with backoff, leases and the run state machine.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Store is the part of the run ledger the engine uses. Implementations must make every
// transition conditional on the run's current state and lease, and must be safe for
// concurrent use.
type Store interface {
	// CreateRun inserts a queued run, or returns the existing run of the same pipeline and
	// idempotency key with created=false. A claim moves a new run to processing in the same commit.
	CreateRun(ctx context.Context, r *domain.Run, actor string, claim *domain.Claim) (run *domain.Run, created bool, err error)
	GetRun(ctx context.Context, id string) (*domain.Run, error)
	Transition(ctx context.Context, runID string, ch domain.Change) error
	RenewLease(ctx context.Context, runID, owner string, until time.Time) error
	ReleaseLease(ctx context.Context, runID, owner string) error
	TakeOver(ctx context.Context, runID, previousOwner, owner string, until time.Time, reason, actor string) error
	// StartAttempt commits the intent to perform a side effect; FinishAttempt commits a result,
	// optionally with a transition. Both refuse when owner no longer holds the run.
	StartAttempt(ctx context.Context, owner string, a *domain.Attempt) error
	FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error
	// CommitAttempts commits in one transaction the finished attempts done, then the intent
	// start and the transition ch when they are not nil; nothing is written when owner no
	// longer holds the run, and the attempts' IDs are then left as they were. The engine
	// defers the results of pure steps and writes them this way with the next commit that
	// must be durable.
	CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error
	Attempts(ctx context.Context, runID string) ([]domain.Attempt, error)
	Events(ctx context.Context, runID string) ([]domain.Event, error)
	// PipelineDisabled reports the kill switch of a pipeline and the reason it was thrown.
	PipelineDisabled(ctx context.Context, pipeline string) (disabled bool, reason string, err error)
	// RebindSpec moves a run to another spec (text, hash, path), provided it still has the
	// hash fromHash, and records the event.
	RebindSpec(ctx context.Context, runID, fromHash string, spec domain.Run, reason, actor string) error
}

// Regater checks a recorded output again against the gate (schema and rules) that a step has
// in the spec the run executes now. approved says a person approved the output, which then
// needs to pass every rule but those that send a value to review.
type Regater interface {
	Regate(step *domain.Step, output any, vars map[string]any, approved bool) error
}

// Observer is told what the engine did; implementations must be safe for concurrent use.
type Observer interface {
	// AttemptFinished hears of every finished attempt, with the model calls it made; the
	// attempt must not be changed.
	AttemptFinished(pipeline string, step *domain.Step, att *domain.Attempt)
	RunChanged(pipeline string, to domain.RunState)
}

// AttemptStarter is an Observer that also hears of each attempt as it starts, for a live
// progress display; the attempt must not be changed.
type AttemptStarter interface {
	AttemptStarted(pipeline string, step *domain.Step, att *domain.Attempt)
}

// ModelCallObserver is an Observer that also hears of each model call of an attempt as soon as
// its answer was judged, before the attempt ends. The call is not redacted yet.
type ModelCallObserver interface {
	ModelCalled(pipeline string, step *domain.Step, att *domain.Attempt, call domain.ModelCall)
}

// Renderer evaluates ${{ }} templates inside a value.
type Renderer interface {
	Render(v any, vars map[string]any) (any, error)
}

// Engine runs pipelines. Its zero value is not usable; fill the exported fields.
type Engine struct {
	Store    Store
	Steps    map[domain.StepType]domain.StepExecutor
	Renderer Renderer
	Log      *slog.Logger
	Owner    Owner
	// Actor is recorded on the events this engine writes.
	Actor   string
	Version string
	// LeaseTTL is how long a lease lasts without a heartbeat; heartbeats come every third of it.
	LeaseTTL time.Duration
	// UnknownRetryDelay is the short pause before the one retry of an unclassified error.
	UnknownRetryDelay time.Duration
	// Observer, when set, hears of every attempt and transition (metrics).
	Observer Observer
	// Regater re-gates recorded outputs when a run continues or is replayed under another
	// spec; without it such a change is refused.
	Regater Regater
	// Redactor, when set, knows the secrets this process holds besides the pipelines' own
	// (model provider keys, the ledger's password); the engine adds each run's secrets to it.
	// Everything the engine writes (ledger rows, logs) goes through it.
	Redactor *domain.Redactor

	rndMu sync.Mutex
	rnd   *rand.Rand

	// spec holds the text and hash of the pipeline last run, which every run records: a
	// process runs the same parsed pipeline many times over.
	spec atomic.Pointer[specOf]
	// workdirs maps a relative pipeline path to its folder made absolute (workdirOf).
	workdirs sync.Map
}

type specOf struct {
	p          *domain.Pipeline
	text, hash string
}

// specText returns a pipeline's text and its SHA-256, computed once per parsed pipeline.
func (e *Engine) specText(p *domain.Pipeline) (text, hash string) {
	if c := e.spec.Load(); c != nil && c.p == p {
		return c.text, c.hash
	}
	c := &specOf{p: p, text: string(p.Text), hash: Hash(p.Text)}
	e.spec.Store(c)
	return c.text, c.hash
}

// Errors that map to exit codes.
var (
	// ErrIdempotencyConflict: the idempotency key belongs to a run with another input.
	ErrIdempotencyConflict = errors.New("idempotency conflict")
	// ErrLiveElsewhere: the run is being executed by another live process.
	ErrLiveElsewhere = errors.New("run is live under another owner")
	// ErrInterrupted: this process was asked to stop; the run can be resumed.
	ErrInterrupted = errors.New("interrupted")
	// ErrDisabled: the pipeline's kill switch is thrown.
	ErrDisabled = errors.New("pipeline disabled")
	// ErrSpecChanged: the run was created from another spec, and continuing under this one
	// was not asked for, or its recorded outputs do not pass this spec's gates.
	ErrSpecChanged = errors.New("spec changed")
)

// RunOptions are the parameters of one submission.
type RunOptions struct {
	// Secrets are the values of the pipeline's declared secrets.
	Secrets map[string]string
	DryRun  bool
	// Offline (with DryRun) forbids all outside I/O: pipeline tests.
	Offline bool
	// Workdir anchors relative exec paths; default: the pipeline file's folder.
	Workdir string
	// AcceptSpecChange lets an existing run continue under this spec although it was created
	// from another one: every recorded output is gated again first.
	AcceptSpecChange bool
	// Settled, when set, is called once the run has nothing left to execute in this call but
	// the write of the transition that ends the call (succeeded, dead-lettered, paused), just
	// before that write: a worker's slot may start another run while it commits.
	Settled func()
}

// Result is the end of Run.
type Result struct {
	Run *domain.Run
	// Duplicate: the idempotency key already had a run; this call only reported it (or resumed it).
	Duplicate bool
	// Resumed: this process took over a run whose previous owner was gone.
	Resumed bool
}

func (e *Engine) leaseTTL() time.Duration {
	if e.LeaseTTL <= 0 {
		return 30 * time.Second
	}
	return e.LeaseTTL
}

func (e *Engine) jitter() *rand.Rand {
	e.rndMu.Lock()
	defer e.rndMu.Unlock()
	if e.rnd == nil {
		e.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(e.Owner.PID)))
	}
	return e.rnd
}

// RunKey computes a run's idempotency key: the pipeline's idempotency.key over the input, or
// the SHA-256 of the canonical input.
func (e *Engine) RunKey(p *domain.Pipeline, input any) (string, error) {
	if p.Idempotency.Key == "" {
		canon, err := domain.CanonicalJSON(input)
		if err != nil {
			return "", err
		}
		return "sha256:" + Hash(canon), nil
	}
	v, err := e.Renderer.Render(p.Idempotency.Key, map[string]any{"inputs": input})
	if err != nil {
		return "", fmt.Errorf("idempotency.key: %w", err)
	}
	key := strings.TrimSpace(fmt.Sprint(v))
	if v == nil || key == "" {
		return "", errors.New("idempotency.key evaluated to an empty key")
	}
	return key, nil
}

// Run creates the run for an input (or finds the existing one with the same key) and executes it
// in this process until it ends or pauses.
func (e *Engine) Run(ctx context.Context, p *domain.Pipeline, input any, opts RunOptions) (*Result, error) {
	if off, reason, err := e.Store.PipelineDisabled(ctx, p.Name); err != nil {
		return nil, err
	} else if off {
		return nil, fmt.Errorf("pipeline %s is disabled (%s); no new run is started: %w", p.Name, reason, ErrDisabled)
	}
	canon, err := domain.CanonicalJSON(input)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	now := time.Now()
	key := ""
	if opts.DryRun {
		// A dry run must never occupy the real run key.
		key = "dry-run:" + NewRunID(now)
	} else if key, err = e.RunKey(p, input); err != nil {
		return nil, err
	}
	specText, specHash := e.specText(p)
	run := &domain.Run{
		ID: NewRunID(now), Pipeline: p.Name, IdempotencyKey: key, InputHash: Hash(canon), Input: canon,
		SpecText: specText, SpecHash: specHash, SpecPath: p.Path, Version: e.Version, DryRun: opts.DryRun,
	}
	got, created, err := e.Store.CreateRun(ctx, run, e.Actor, &domain.Claim{Owner: e.Owner.String(), LeaseUntil: now.Add(e.leaseTTL())})
	if err != nil {
		return nil, err
	}
	res := &Result{Run: got, Duplicate: !created}
	if !created {
		if got.InputHash != run.InputHash {
			return res, fmt.Errorf("run %s has idempotency key %q with a different input: %w", got.ID, key, ErrIdempotencyConflict)
		}
		if got.SpecHash != run.SpecHash && e.wouldContinue(got) {
			if err := e.rebindSpec(ctx, p, got, input, opts); err != nil {
				return res, err
			}
		}
		proceed, resumed, err := e.adopt(ctx, got)
		res.Resumed = resumed
		if err != nil || !proceed {
			if latest, gerr := e.Store.GetRun(ctx, got.ID); gerr == nil {
				res.Run = latest
			}
			return res, err
		}
	}
	var fresh *domain.Run
	if created {
		fresh = got
	}
	final, err := e.execute(ctx, p, got.ID, fresh, input, opts)
	if final != nil {
		res.Run = final
	}
	return res, err
}

// adopt decides what a second submission of an existing run does: report a finished or
// paused run, continue a queued or retry-pending one, take over a processing run whose owner is
// gone, or refuse one that is live elsewhere.
func (e *Engine) adopt(ctx context.Context, r *domain.Run) (proceed, resumed bool, err error) {
	switch r.State {
	case domain.StateQueued:
		return true, false, e.claim(ctx, r.ID, "claimed by "+e.Owner.String())
	case domain.StateFailedTransient:
		if wait := time.Until(r.NextAttemptAt); wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return false, false, ErrInterrupted
			}
		}
		return true, true, e.claim(ctx, r.ID, "retry due; continued by "+e.Owner.String())
	case domain.StateProcessing:
		prev, _ := ParseOwner(r.LeaseOwner)
		gone := prev.Gone(e.Owner)
		expired := !r.LeaseExpires.IsZero() && time.Now().After(r.LeaseExpires)
		if !gone && !expired {
			return false, false, fmt.Errorf("run %s is being executed by %s: %w", r.ID, r.LeaseOwner, ErrLiveElsewhere)
		}
		why := "lease expired"
		switch {
		case domain.HandedBack(r.LeaseExpires):
			why = "handed back"
		case gone:
			why = "owner process is gone"
		}
		reason := fmt.Sprintf("taken over from %s (%s)", r.LeaseOwner, why)
		if r.LeaseOwner == "" { // enqueued by an operator: nobody to name
			reason = fmt.Sprintf("taken over (%s)", why)
		}
		if err := e.Store.TakeOver(ctx, r.ID, r.LeaseOwner, e.Owner.String(), time.Now().Add(e.leaseTTL()), reason, e.Actor); err != nil {
			return false, false, fmt.Errorf("taking over run %s: %w", r.ID, err)
		}
		e.Log.Info("run taken over", "run_id", r.ID, "pipeline", r.Pipeline, "idempotency_key", r.IdempotencyKey, "previous_owner", r.LeaseOwner, "reason", why)
		return true, true, nil
	}
	return false, false, nil
}

func (e *Engine) claim(ctx context.Context, runID, reason string) error {
	return e.Store.Transition(ctx, runID, domain.Change{To: domain.StateProcessing, Reason: reason, Actor: e.Actor, LeaseOwner: e.Owner.String(), LeaseUntil: time.Now().Add(e.leaseTTL())})
}

// workdirOf is the folder a run's relative paths start from: the pipeline file's. A relative
// path is made absolute once per path and process: it asks the kernel for the working
// directory (two stats), which had cost a busy worker 7% of its CPU when done for every run.
// pipectl never changes its working directory, so the answer does not change either.
func (e *Engine) workdirOf(p *domain.Pipeline, opts RunOptions) string {
	if opts.Workdir != "" {
		return opts.Workdir
	}
	if p.Path == "" {
		return "."
	}
	if filepath.IsAbs(p.Path) {
		return filepath.Dir(p.Path)
	}
	if abs, ok := e.workdirs.Load(p.Path); ok {
		return abs.(string)
	}
	abs, err := filepath.Abs(filepath.Dir(p.Path))
	if err != nil {
		return filepath.Dir(p.Path)
	}
	e.workdirs.Store(p.Path, abs)
	return abs
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Continue executes a run that an operator put back in motion: a queued run (redrive) is
// claimed first; a run already in processing must be held by this process (review, signal).
func (e *Engine) Continue(ctx context.Context, p *domain.Pipeline, r *domain.Run, input any, opts RunOptions) (*domain.Run, error) {
	switch {
	case r.State == domain.StateQueued:
		if off, reason, err := e.Store.PipelineDisabled(ctx, p.Name); err != nil {
			return r, err
		} else if off {
			return r, fmt.Errorf("run %s stays queued: pipeline %s is disabled (%s): %w", r.ID, p.Name, reason, ErrDisabled)
		}
		if err := e.claim(ctx, r.ID, "claimed by "+e.Owner.String()); err != nil {
			return r, err
		}
	case r.State == domain.StateProcessing && r.LeaseOwner == e.Owner.String():
		if r.Unstarted {
			// Just claimed, and nothing of it ran yet: there is no history to read back.
			return e.execute(ctx, p, r.ID, r, input, opts)
		}
	default:
		return r, fmt.Errorf("run %s is %s under %q; it cannot be continued here: %w", r.ID, r.State, r.LeaseOwner, domain.ErrStateConflict)
	}
	return e.execute(ctx, p, r.ID, nil, input, opts)
}

// Submit creates a run as queued for workers, or reports the existing run with the same key.
func (e *Engine) Submit(ctx context.Context, p *domain.Pipeline, input any) (*Result, error) {
	return e.SubmitKeyed(ctx, p, input, "")
}

// SubmitKeyed is Submit with the run's idempotency key given by the caller (an API client's
// Idempotency-Key, a webhook delivery, a schedule slot); an empty key is computed as RunKey does.
func (e *Engine) SubmitKeyed(ctx context.Context, p *domain.Pipeline, input any, key string) (*Result, error) {
	if off, reason, err := e.Store.PipelineDisabled(ctx, p.Name); err != nil {
		return nil, err
	} else if off {
		return nil, fmt.Errorf("pipeline %s is disabled (%s); no new run is queued: %w", p.Name, reason, ErrDisabled)
	}
	canon, err := domain.CanonicalJSON(input)
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	if key == "" {
		if key, err = e.RunKey(p, input); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	specText, specHash := e.specText(p)
	run := &domain.Run{
		ID: NewRunID(now), Pipeline: p.Name, IdempotencyKey: key, InputHash: Hash(canon), Input: canon,
		SpecText: specText, SpecHash: specHash, SpecPath: p.Path, Version: e.Version,
	}
	got, created, err := e.Store.CreateRun(ctx, run, e.Actor, nil)
	if err != nil {
		return nil, err
	}
	if !created && got.InputHash != run.InputHash {
		return &Result{Run: got, Duplicate: true}, fmt.Errorf("run %s has idempotency key %q with a different input: %w", got.ID, key, ErrIdempotencyConflict)
	}
	return &Result{Run: got, Duplicate: !created}, nil
}
