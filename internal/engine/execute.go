package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// unitKey names one schedulable piece of work: a step, or one item of a for_each step.
type unitKey struct {
	step string
	item int
}

// progress is what the ledger says about a run's steps, rebuilt at every (re)start so that
// completed work is never redone.
type progress struct {
	outputs     map[string]any
	done        map[string]bool
	itemOutputs map[string]map[int]any
	attempts    map[unitKey]int
	failures    map[unitKey]int
	unknowns    map[unitKey]int
}

func emptyProgress() *progress {
	return &progress{
		outputs: map[string]any{}, done: map[string]bool{}, itemOutputs: map[string]map[int]any{},
		attempts: map[unitKey]int{}, failures: map[unitKey]int{}, unknowns: map[unitKey]int{},
	}
}

// loadProgress rebuilds progress from the ledger. Failures before since (the last redrive)
// do not count against the retry budget: a redriven run gets its attempts back. Outputs go
// through their step's schema again, so that a resumed run sees the numbers the gate passed
// (a proposal approved by a person included), not what JSON makes of them.
func loadProgress(p *domain.Pipeline, attempts []domain.Attempt, since time.Time) (*progress, error) {
	pr := emptyProgress()
	for _, a := range attempts {
		k := unitKey{a.StepID, a.ItemIndex}
		pr.attempts[k] = max(pr.attempts[k], a.Attempt)
		switch {
		case a.Outcome == domain.OutcomeFailed && a.StartedAt.Before(since):
		case domain.Completed(a.Outcome):
			var out any
			if len(a.Output) > 0 {
				v, err := domain.DecodeJSON(a.Output)
				if err != nil {
					return nil, fmt.Errorf("ledger output of %s: %w", a.StepID, err)
				}
				out = coerceOutput(p.Step(a.StepID), a.ItemIndex, v)
			}
			if a.ItemIndex == domain.NoItem {
				pr.outputs[a.StepID] = out
				pr.done[a.StepID] = true
			} else {
				if pr.itemOutputs[a.StepID] == nil {
					pr.itemOutputs[a.StepID] = map[int]any{}
				}
				pr.itemOutputs[a.StepID][a.ItemIndex] = out
			}
		case a.Outcome == domain.OutcomeFailed:
			pr.failures[k]++
			if a.ErrorClass == domain.ClassUnknown {
				pr.unknowns[k]++
			}
		}
	}
	return pr, nil
}

// coerceOutput applies a step's output schema to an output read back from the ledger; a
// for_each step's collected list gets it item by item.
func coerceOutput(step *domain.Step, item int, v any) any {
	if step == nil {
		return v
	}
	var schema *domain.Schema
	switch {
	case step.LLM != nil:
		schema = step.LLM.OutputSchema
	case step.Gate != nil:
		schema = step.Gate.Schema
	case step.Wait != nil:
		schema = step.Wait.Schema
	}
	if schema == nil {
		return v
	}
	if list, ok := v.([]any); ok && step.ForEach != "" && item == domain.NoItem {
		for i, e := range list {
			list[i] = domain.CoerceNumbers(schema.Doc, e)
		}
		return list
	}
	return domain.CoerceNumbers(schema.Doc, v)
}

// lastRedrive is when the run last came back from the dead-letter queue.
func lastRedrive(events []domain.Event) time.Time {
	var at time.Time
	for _, e := range events {
		if e.From == domain.StateFailedPermanent && e.To == domain.StateQueued {
			at = e.At
		}
	}
	return at
}

// session is one pass over a run while this process holds its lease.
type session struct {
	e *Engine
	// store takes the session's writes: the ledger, or for a run held by its claim (Finish)
	// a heldStore that keeps them for the claim to make.
	store   Store
	held    *heldStore
	p       *domain.Pipeline
	run     *domain.Run
	input   any
	opts    RunOptions
	owner   string
	redact  *domain.Redactor
	logger  *slog.Logger
	secrets map[string]any
	workdir string
	pr      *progress

	// unactivated holds, in file order, the steps not yet activated that were not complete
	// when the session started (listed on the first activateReady): each activation scans
	// only those, not every step of the pipeline again.
	unactivated []*domain.Step
	listed      bool
	// doneUpTo counts the leading steps (in file order) known to be complete.
	doneUpTo int
	items    map[string]int // for_each steps: how many items
	pending  []*unit
	inflight int
	perStep  map[string]int
	results  chan *unitResult
	// ready holds the results of units run inline by dispatch, ahead of the channel; async
	// counts the units running on goroutines of their own.
	ready []*unitResult
	async int

	// baseVars are the expression variables every unit shares (inputs, steps, run, secrets),
	// and stepsVar the steps variable in it. Units read them on their own goroutines, so
	// record adds an output to stepsVar in place only while none runs (in a pipeline of steps
	// one after another, that is always); otherwise both are rebuilt, and the maps the
	// running units hold are never written again. A unit reads only the steps it depends on,
	// which were all complete when it was activated, so an entry added later changes nothing
	// it sees. outputVars caches each step's {"output": ...} entry for the rebuilds.
	baseVars   map[string]any
	stepsVar   map[string]any
	outputVars map[string]map[string]any

	stopping bool
	// retryAt is set when a transient failure asks for the run to be retried.
	retryAt time.Time
	failure *failure
	// review is set when a step needs a person's decision.
	review string
	// waitUntil is set when a wait step waits for its signal (zero deadline: forever).
	waiting   string
	waitUntil time.Time
	// disabled is set when the kill switch was thrown during the pass.
	disabled    string
	checkedKill time.Time

	// deferred holds the finished attempts of pure steps (and skips) not yet committed: they
	// go with the next commit that must be durable (a side effect's intent, a result that
	// is not pure, a pause, the run's end). wmu guards it and is held through any commit that
	// writes it, so that attempts reach the ledger in the order they finished.
	wmu      sync.Mutex
	deferred []*domain.Attempt

	// lease is when this process's lease runs out as far as it knows; cancelLease ends the
	// pass when it is lost (once, with lostOnce).
	lease       leaseClock
	cancelLease context.CancelCauseFunc
	lostOnce    sync.Once
	// leaving is set once the write that moves the run out of processing is on its way.
	leaving atomic.Bool
}

// pureStep reports whether a step's attempt may be recomputed after a crash instead of being
// committed at once: it has no side effect and asks nothing of the outside world (a model
// call costs money and may answer differently, so llm steps are not pure here).
func pureStep(step *domain.Step) bool {
	return step.Type == domain.StepTransform || step.Type == domain.StepGate
}

type failure struct {
	step  string
	class domain.ErrorClass
	err   string
}

type unit struct {
	step  *domain.Step
	item  int
	value any
	vars  map[string]any
	att   *domain.Attempt
}

type unitResult struct {
	u   *unit
	res domain.StepResult
	err error
	// unrecorded: the intent could not be committed, so the step did not run; err is the
	// ledger's, not the step's.
	unrecorded bool
}

// execute runs a claimed run until it ends, pauses, or this process must stop.
// A fresh run (just created and claimed by this process) is passed in, which saves reading
// back what was just written; otherwise run is nil and the ledger is read.
func (e *Engine) execute(ctx context.Context, p *domain.Pipeline, runID string, fresh *domain.Run, input any, opts RunOptions) (*domain.Run, error) {
	redact, secrets := e.secretsOf(opts)
	fresh0 := fresh
	for {
		run, pr := fresh, emptyProgress()
		fresh = nil
		if run == nil {
			var err error
			if run, err = e.Store.GetRun(ctx, runID); err != nil {
				return nil, err
			}
			attempts, err := e.Store.Attempts(ctx, runID)
			if err != nil {
				return run, err
			}
			events, err := e.Store.Events(ctx, runID)
			if err != nil {
				return run, err
			}
			if pr, err = loadProgress(p, attempts, lastRedrive(events)); err != nil {
				return run, err
			}
		}
		s := e.newSession(p, run, input, opts, redact, secrets, pr)
		if run == fresh0 {
			// Whoever created or claimed this run just now asked for the kill switch (a claim
			// skips disabled pipelines): no need to ask again before the first step.
			s.checkedKill = time.Now()
		}
		if err := s.pass(ctx); err != nil {
			final, _ := e.Store.GetRun(context.WithoutCancel(ctx), runID)
			return final, err
		}
		final := s.run
		if final.State != domain.StateFailedTransient || s.retryAt.IsZero() {
			return final, nil
		}
		// Same process continues when the retry is due, unless another process got there first.
		if err := sleep(ctx, time.Until(s.retryAt)); err != nil {
			return final, ErrInterrupted
		}
		if err := e.claim(ctx, runID, "retry due"); err != nil {
			if errors.Is(err, domain.ErrStateConflict) {
				latest, _ := e.Store.GetRun(ctx, runID)
				return latest, nil
			}
			return final, err
		}
	}
}

// secretsOf returns the redactor that knows a run's secrets, and the secrets as the
// expressions see them.
func (e *Engine) secretsOf(opts RunOptions) (*domain.Redactor, map[string]any) {
	values := make([]string, 0, len(opts.Secrets))
	secrets := make(map[string]any, len(opts.Secrets))
	for k, v := range opts.Secrets {
		values = append(values, v)
		secrets[k] = v
	}
	redact := e.Redactor
	if redact == nil {
		redact = domain.NewRedactor(nil)
	}
	redact.Add(values...)
	return redact, secrets
}

func (e *Engine) newSession(p *domain.Pipeline, run *domain.Run, input any, opts RunOptions, redact *domain.Redactor, secrets map[string]any, pr *progress) *session {
	return &session{
		e: e, store: e.Store, p: p, run: run, input: input, opts: opts, owner: e.Owner.String(), redact: redact, secrets: secrets,
		logger:  slog.New(RedactingHandler(e.Log.Handler(), redact)),
		workdir: e.workdirOf(p, opts), pr: pr, items: map[string]int{},
		perStep: map[string]int{}, results: make(chan *unitResult),
	}
}

// tell passes news of the run to the observer and the log: at once, or for a run held by its
// claim once the claim committed (nothing may be told of a run before its record).
func (s *session) tell(f func()) {
	if s.held != nil {
		s.held.mu.Lock()
		s.held.later = append(s.held.later, f)
		s.held.mu.Unlock()
		return
	}
	f()
}

// pass schedules and runs units until the run completes, fails, needs a retry, or stops.
func (s *session) pass(parent context.Context) error {
	deadline := s.run.CreatedAt.Add(s.p.Limits.RunTimeout)
	ctx, cancel := context.WithDeadlineCause(parent, deadline, errRunTimeout)
	defer cancel()
	ctx, s.cancelLease = context.WithCancelCause(ctx)
	if s.run.LeaseExpires.IsZero() {
		s.lease.renewed(time.Now().Add(s.e.leaseTTL()))
	} else {
		s.lease.renewed(s.run.LeaseExpires)
	}
	if s.held == nil { // a held run has no lease to renew: its claim's lock holds it
		stopHeartbeat := s.e.heartbeat(ctx, s.run.ID, s.owner, func(err error) {
			// Once the write that moves the run out of processing is sent, a renewal refused is
			// most likely that write landing: the write itself says if the lease was lost.
			if !s.leaving.Load() {
				s.leaseLost(err)
			}
		}, s.lease.renewed)
		defer stopHeartbeat()
	}

	for {
		if !s.stopping && ctx.Err() == nil {
			if err := s.activateReady(ctx); err != nil {
				return err
			}
		}
		s.dispatch(ctx)
		if s.inflight == 0 {
			break
		}
		r := s.next()
		s.inflight--
		s.perStep[r.u.step.ID]--
		if err := s.handle(ctx, r); err != nil {
			s.drain()
			return err
		}
	}
	return s.finish(parent, ctx)
}

var errRunTimeout = errors.New("run timeout exceeded")

// next returns the next finished unit: one run inline first, else one from the goroutines.
func (s *session) next() *unitResult {
	if len(s.ready) > 0 {
		r := s.ready[0]
		s.ready = s.ready[1:]
		return r
	}
	r := <-s.results
	s.async--
	return r
}

// activateReady starts every step whose dependencies are complete: it evaluates if and for_each
// and queues the units. Skips and empty fan-outs complete at once.
func (s *session) activateReady(ctx context.Context) error {
	if !s.listed {
		s.listed = true
		s.unactivated = make([]*domain.Step, 0, len(s.p.Steps))
		for _, step := range s.p.Steps {
			if !s.pr.done[step.ID] {
				s.unactivated = append(s.unactivated, step)
			}
		}
	}
	for progressed := true; progressed && !s.stopping; {
		progressed = false
		// A step that failed here (its if or for_each) stops the pass, and its write may have
		// ended the run already: nothing more is activated, or a skip after it would write
		// the run's end a second time (and say it settled twice).
		for i := 0; i < len(s.unactivated) && !s.stopping; {
			step := s.unactivated[i]
			if !s.pr.done[step.ID] && !s.depsDone(step) {
				i++
				continue
			}
			s.unactivated = slices.Delete(s.unactivated, i, i+1)
			if s.pr.done[step.ID] {
				continue
			}
			progressed = true
			if err := s.activate(ctx, step); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *session) depsDone(step *domain.Step) bool {
	for _, n := range step.Needs {
		if !s.pr.done[n] {
			return false
		}
	}
	return true
}

func (s *session) activate(ctx context.Context, step *domain.Step) error {
	vars := s.vars(nil, 0, false)
	if step.If != "" {
		v, err := s.e.Renderer.Render(step.If, vars)
		if err != nil {
			return s.stepFailed(ctx, step, domain.NoItem, domain.Permanent(fmt.Errorf("if: %w", err)))
		}
		b, ok := v.(bool)
		if !ok {
			return s.stepFailed(ctx, step, domain.NoItem, domain.Permanentf("if: yields %T, not a boolean", v))
		}
		if !b {
			return s.complete(ctx, step, domain.NoItem, domain.OutcomeSkipped, nil, nil)
		}
	}
	if step.ForEach == "" {
		s.pending = append(s.pending, &unit{step: step, item: domain.NoItem, vars: vars})
		return nil
	}
	v, err := s.e.Renderer.Render(step.ForEach, vars)
	if err != nil {
		return s.stepFailed(ctx, step, domain.NoItem, domain.Permanent(fmt.Errorf("for_each: %w", err)))
	}
	list, ok := v.([]any)
	if !ok {
		return s.stepFailed(ctx, step, domain.NoItem, domain.Permanentf("for_each: yields %T, not a list", v))
	}
	s.items[step.ID] = len(list)
	queued := 0
	for i, item := range list {
		if _, done := s.pr.itemOutputs[step.ID][i]; done {
			continue
		}
		s.pending = append(s.pending, &unit{step: step, item: i, value: item, vars: s.vars(item, i, true)})
		queued++
	}
	if queued == 0 {
		return s.completeForEach(ctx, step)
	}
	return nil
}

// vars returns the expression variables for a unit: the shared ones (see baseVars), with item
// and index in a map of the unit's own for a for_each item. Nobody writes to what it returns.
func (s *session) vars(item any, index int, withItem bool) map[string]any {
	if s.baseVars == nil {
		if s.stepsVar == nil {
			if s.outputVars == nil {
				s.outputVars = make(map[string]map[string]any, len(s.p.Steps))
			}
			steps := make(map[string]any, len(s.p.Steps))
			for id, out := range s.pr.outputs {
				o := s.outputVars[id]
				if o == nil {
					o = map[string]any{"output": out}
					s.outputVars[id] = o
				}
				steps[id] = o
			}
			s.stepsVar = steps
		}
		s.baseVars = map[string]any{
			"inputs":  s.input,
			"steps":   s.stepsVar,
			"run":     map[string]any{"id": s.run.ID, "idempotency_key": s.run.IdempotencyKey, "pipeline": s.run.Pipeline},
			"secrets": s.secrets,
		}
	}
	if !withItem {
		return s.baseVars
	}
	v := make(map[string]any, len(s.baseVars)+2)
	for k, x := range s.baseVars {
		v[k] = x
	}
	v["item"] = item
	v["index"] = int64(index)
	return v
}

// outputRecorded makes a step's output visible to the units activated from now on.
func (s *session) outputRecorded(id string, out any) {
	o := map[string]any{"output": out}
	if s.outputVars != nil {
		s.outputVars[id] = o
	}
	if s.stepsVar != nil && s.async == 0 {
		s.stepsVar[id] = o
		return
	}
	s.stepsVar, s.baseVars = nil, nil
}

func (s *session) maxParallel() int {
	if s.p.Limits.MaxParallel > 0 {
		return s.p.Limits.MaxParallel
	}
	return domain.DefaultMaxParallel
}

// dispatch starts pending units within the run's and each step's parallelism.
func (s *session) dispatch(ctx context.Context) {
	if s.stopping || ctx.Err() != nil || len(s.pending) == 0 {
		return
	}
	if s.killSwitch(ctx) {
		return
	}
	kept := s.pending[:0]
	var started []*unit
	for _, u := range s.pending {
		limit := 1
		if u.step.ForEach != "" {
			limit = max(u.step.MaxParallel, 1)
		}
		if s.inflight >= s.maxParallel() || s.perStep[u.step.ID] >= limit {
			kept = append(kept, u)
			continue
		}
		k := unitKey{u.step.ID, u.item}
		s.pr.attempts[k]++
		u.att = &domain.Attempt{
			RunID: s.run.ID, StepID: u.step.ID, ItemIndex: u.item, Attempt: s.pr.attempts[k],
			StepKey:   StepKey(s.run.Pipeline, s.stepKeyBase(), u.step.ID, u.item),
			StartedAt: time.Now(), Outcome: domain.OutcomeRunning,
		}
		s.inflight++
		s.perStep[u.step.ID]++
		started = append(started, u)
	}
	s.pending = kept
	// A pure unit that would run alone runs here: it cannot block, and a goroutine of its own
	// (with its stack grown anew for the expression evaluator) would cost more than the step.
	if len(started) == 1 && s.inflight == 1 && pureStep(started[0].step) {
		s.ready = append(s.ready, s.e.runUnit(ctx, s, started[0]))
		return
	}
	s.async += len(started)
	for _, u := range started {
		go func(u *unit) { s.results <- s.e.runUnit(ctx, s, u) }(u)
	}
}

// killSwitch reports whether the pipeline was disabled; it asks the ledger at most once a
// second, so the check costs nothing on the hot path of fast steps.
func (s *session) killSwitch(ctx context.Context) bool {
	if s.disabled != "" {
		return true
	}
	if time.Since(s.checkedKill) < time.Second {
		return false
	}
	s.checkedKill = time.Now()
	off, reason, err := s.store.PipelineDisabled(ctx, s.run.Pipeline)
	if err != nil || !off {
		return false
	}
	if reason == "" {
		reason = "no reason given"
	}
	s.disabled = reason
	s.stopping = true
	return true
}

// runUnit performs one attempt: the intent commit for side effects, then the executor.
func (e *Engine) runUnit(ctx context.Context, s *session, u *unit) (r *unitResult) {
	r = &unitResult{u: u}
	exec := e.Steps[u.step.Type]
	if exec == nil {
		r.err = domain.Permanentf("step type %s is not available in this build", u.step.Type)
		return r
	}
	if err := e.checkSinks(s.p, u.step, u.vars); err != nil {
		r.err = err
		return r
	}
	if u.step.SideEffecting() && !s.run.DryRun {
		if err := s.startAttempt(ctx, u.att); err != nil {
			r.err, r.unrecorded = fmt.Errorf("recording the attempt of %s: %w", u.step.ID, err), true
			return r
		}
	}
	if o, ok := e.Observer.(AttemptStarter); ok {
		if s.held == nil {
			o.AttemptStarted(s.run.Pipeline, u.step, u.att)
		} else {
			att := *u.att // as it started, not as it ended
			s.tell(func() { o.AttemptStarted(s.run.Pipeline, u.step, &att) })
		}
	}
	attemptCtx := ctx
	if !pureStep(u.step) {
		// A pure step's executor does not wait on anything its context could stop; an
		// expression is bounded by its cost limit instead.
		timeout := u.step.Timeout
		if timeout == 0 {
			timeout = s.p.Defaults.Timeout
		}
		var cancel context.CancelFunc
		attemptCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	call := &domain.StepCall{
		RunID: s.run.ID, Pipeline: s.run.Pipeline, IdempotencyKey: s.run.IdempotencyKey, Step: u.step,
		ItemIndex: u.item, Attempt: u.att.Attempt, StepKey: u.att.StepKey, DryRun: s.run.DryRun, Offline: s.opts.Offline, Workdir: s.workdir,
		Vars:     u.vars,
		Redactor: s.redact,
		Fence:    s.fence,
		Render:   func(v any) (any, error) { return e.Renderer.Render(v, u.vars) },
		RenderWith: func(v any, extra map[string]any) (any, error) {
			vars := make(map[string]any, len(u.vars)+len(extra))
			for k, x := range u.vars {
				vars[k] = x
			}
			for k, x := range extra {
				vars[k] = x
			}
			return e.Renderer.Render(v, vars)
		},
	}
	if o, ok := e.Observer.(ModelCallObserver); ok {
		call.ModelCalled = func(c domain.ModelCall) { o.ModelCalled(s.run.Pipeline, u.step, u.att, c) }
	}
	defer func() {
		if p := recover(); p != nil {
			r.err = &domain.ClassifiedError{Class: domain.ClassUnknown, Err: fmt.Errorf("panic in %s step: %v\n%s", u.step.Type, p, debug.Stack())}
		}
	}()
	r.res, r.err = exec.Execute(attemptCtx, call)
	return r
}

// handle records a unit's result and decides what follows.
func (s *session) handle(ctx context.Context, r *unitResult) error {
	if r.unrecorded {
		// The ledger failed, not the step (which did not run): that is no attempt to count
		// against the retry budget (during a database restart it dead-lettered runs). The
		// pass stops; the next owner runs the step.
		return r.err
	}
	u, att := r.u, r.u.att
	att.FinishedAt = time.Now()
	att.DurationMS = att.FinishedAt.Sub(att.StartedAt).Milliseconds()
	att.Request = s.redactJSON(r.res.Request)
	att.Response = s.redactJSON(r.res.Response)
	att.Calls = s.redactCalls(r.res.Calls)
	if r.err == nil && r.res.Outcome == domain.OutcomeWaiting {
		att.Outcome = domain.OutcomeWaiting
		att.Output = s.redactJSON(r.res.Output)
		s.stopping = true
		if s.waiting == "" {
			s.waiting = fmt.Sprintf("step %s waits for a signal", u.step.ID)
			if u.step.Timeout > 0 {
				s.waitUntil = time.Now().Add(u.step.Timeout)
				s.waiting += " until " + s.waitUntil.UTC().Format(time.RFC3339)
			}
		}
		s.logAttempt(u, att)
		return s.writeAttempt(ctx, att, s.changeIfLast(), false)
	}
	if r.err == nil && r.res.Outcome == domain.OutcomeNeedsReview {
		att.Outcome = domain.OutcomeNeedsReview
		att.Output = s.redactJSON(r.res.Output)
		s.stopping = true
		if s.review == "" {
			s.review = fmt.Sprintf("step %s needs review: %s", u.step.ID, s.redact.String(r.res.Review))
		}
		s.logAttempt(u, att)
		return s.writeAttempt(ctx, att, s.changeIfLast(), false)
	}
	if r.err == nil && r.res.Output != nil {
		out, err := domain.MarshalJSON(r.res.Output)
		if err != nil {
			// Nothing after this step could see the value it made: JSON cannot carry it.
			r.err = domain.Permanent(fmt.Errorf("output: %w", err))
		} else {
			att.Output = s.redact.JSON(out)
		}
	}
	if r.err == nil {
		att.Outcome = r.res.Outcome
		if att.Outcome == "" {
			att.Outcome = domain.OutcomeSucceeded
		}
		s.record(u, r.res.Output)
		return s.commit(ctx, u.step, att)
	}
	if errors.Is(r.err, domain.ErrLeaseLost) {
		// The fence refused the side effect: the run is another process's now.
		s.leaseLost(r.err)
	}
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errRunTimeout) {
		// Stopping (interrupt or lost lease): the attempt stays as its intent row, if any,
		// and a later owner marks it abandoned.
		s.stopping = true
		return nil
	}
	err := r.err
	if errors.Is(context.Cause(ctx), errRunTimeout) {
		err = domain.Permanent(fmt.Errorf("%w (%s): %v", errRunTimeout, s.p.Limits.RunTimeout, r.err))
	}
	return s.attemptFailed(ctx, u, att, err)
}

func (s *session) attemptFailed(ctx context.Context, u *unit, att *domain.Attempt, err error) error {
	class := domain.ClassOf(err)
	att.Outcome = domain.OutcomeFailed
	att.ErrorClass = class
	att.Error = s.redact.String(errorText(err, class))
	k := unitKey{u.step.ID, u.item}
	s.pr.failures[k]++
	policy := s.p.Defaults.Retry
	if u.step.Retry != nil {
		policy = *u.step.Retry
	}
	var delay time.Duration
	retry := false
	switch class {
	case domain.ClassTransient:
		retry = s.pr.failures[k] < policy.MaxAttempts
		delay = backoff(policy, s.pr.failures[k], domain.RetryAfterOf(err), s.e.jitter())
	case domain.ClassUnknown:
		s.pr.unknowns[k]++
		retry = s.pr.unknowns[k] < 2 && s.pr.failures[k] < max(policy.MaxAttempts, 2)
		delay = s.e.UnknownRetryDelay
		if delay == 0 {
			delay = time.Second
		}
	}
	s.logAttempt(u, att)
	s.stopping = true
	if retry {
		at := time.Now().Add(delay)
		if deadline := s.run.CreatedAt.Add(s.p.Limits.RunTimeout); at.After(deadline) {
			s.setFailure(u.step.ID, domain.ClassPermanent, fmt.Sprintf("the next attempt would start after the run timeout: %s", att.Error))
		} else if at.After(s.retryAt) {
			s.retryAt = at
		}
	} else {
		msg := att.Error
		if class == domain.ClassTransient {
			msg = fmt.Sprintf("attempts exhausted (%d of %d): %s", s.pr.failures[k], policy.MaxAttempts, att.Error)
		}
		s.setFailure(u.step.ID, class, msg)
	}
	return s.writeAttempt(ctx, att, s.changeIfLast(), false)
}

func (s *session) setFailure(step string, class domain.ErrorClass, msg string) {
	if s.failure == nil {
		s.failure = &failure{step: step, class: class, err: msg}
	}
}

// errorText is what the ledger keeps of an error; unknown errors keep their whole chain, since
// nobody classified them and the on-call engineer will need every detail.
func errorText(err error, class domain.ErrorClass) string {
	if class != domain.ClassUnknown {
		return err.Error()
	}
	text := fmt.Sprintf("%v\n  error type %T", err, err)
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		text += fmt.Sprintf("\n  caused by %T: %v", e, e)
	}
	return text
}

// stepFailed records a failure that happened before any attempt could start (if, for_each).
func (s *session) stepFailed(ctx context.Context, step *domain.Step, item int, err error) error {
	k := unitKey{step.ID, item}
	s.pr.attempts[k]++
	now := time.Now()
	att := &domain.Attempt{RunID: s.run.ID, StepID: step.ID, ItemIndex: item, Attempt: s.pr.attempts[k],
		StepKey: StepKey(s.run.Pipeline, s.stepKeyBase(), step.ID, item), StartedAt: now, FinishedAt: now}
	return s.attemptFailed(ctx, &unit{step: step, item: item}, att, err)
}

// record keeps a completed unit's output for the steps that follow.
func (s *session) record(u *unit, out any) {
	if u.item == domain.NoItem {
		s.pr.outputs[u.step.ID] = out
		s.pr.done[u.step.ID] = true
		s.outputRecorded(u.step.ID, out)
		return
	}
	if s.pr.itemOutputs[u.step.ID] == nil {
		s.pr.itemOutputs[u.step.ID] = map[int]any{}
	}
	s.pr.itemOutputs[u.step.ID][u.item] = out
}

// commit writes a completed attempt; the last item of a for_each also writes the step's list.
func (s *session) commit(ctx context.Context, step *domain.Step, att *domain.Attempt) error {
	s.logAttempt(&unit{step: step, item: att.ItemIndex}, att)
	pure := pureStep(step)
	if att.ItemIndex != domain.NoItem && len(s.pr.itemOutputs[step.ID]) == s.items[step.ID] {
		if err := s.writeAttempt(ctx, att, nil, pure); err != nil {
			return err
		}
		return s.completeForEach(ctx, step)
	}
	return s.writeAttempt(ctx, att, s.changeIfLast(), pure)
}

// complete records a step that finished without an attempt of its executor (a skip).
func (s *session) complete(ctx context.Context, step *domain.Step, item int, outcome string, out any, outJSON []byte) error {
	k := unitKey{step.ID, item}
	number := 0 // a for_each step's collected output is attempt 0: no work of its own
	if step.ForEach == "" || outcome == domain.OutcomeSkipped {
		s.pr.attempts[k]++
		number = s.pr.attempts[k]
	}
	now := time.Now()
	att := &domain.Attempt{RunID: s.run.ID, StepID: step.ID, ItemIndex: item, Attempt: number,
		StepKey: StepKey(s.run.Pipeline, s.stepKeyBase(), step.ID, item), StartedAt: now, FinishedAt: now,
		Outcome: outcome, Output: outJSON}
	s.record(&unit{step: step, item: item}, out)
	if number > 0 {
		s.logAttempt(&unit{step: step, item: item}, att)
	}
	// A skip and a for_each step's collected list did no work of their own: recomputing them
	// after a crash repeats nothing.
	return s.writeAttempt(ctx, att, s.changeIfLast(), true)
}

func (s *session) completeForEach(ctx context.Context, step *domain.Step) error {
	list := make([]any, s.items[step.ID])
	for i := range list {
		list[i] = s.pr.itemOutputs[step.ID][i]
	}
	return s.complete(ctx, step, domain.NoItem, domain.OutcomeSucceeded, list, s.redactJSON(list))
}

// writeAttempt records a finished attempt, with the run's transition when ch is set. The
// attempt of a pure step (deferrable) waits for the next commit when nothing else goes with
// it; any other write carries every deferred attempt before its own.
func (s *session) writeAttempt(ctx context.Context, att *domain.Attempt, ch *domain.Change, deferrable bool) error {
	s.wmu.Lock()
	if deferrable && ch == nil {
		s.deferred = append(s.deferred, att)
		s.wmu.Unlock()
		return nil
	}
	// Results are written even while the run is being stopped: the work was done.
	wctx := context.WithoutCancel(ctx)
	s.settling(ch)
	s.leave(ch)
	var err error
	if len(s.deferred) == 0 {
		err = s.retrying(ctx, func() error { return s.store.FinishAttempt(wctx, s.owner, att, ch) })
	} else {
		done := append(s.deferred[:len(s.deferred):len(s.deferred)], att)
		if err = s.retrying(ctx, func() error { return s.store.CommitAttempts(wctx, s.owner, done, nil, ch) }); err == nil {
			s.deferred = nil
		}
	}
	s.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("recording %s attempt %d: %w", att.StepID, att.Attempt, err)
	}
	s.applied(ch)
	return nil
}

// startAttempt commits the intent of a side effect, and with it every deferred attempt: what
// the side effect may depend on is durable before it happens. Units run concurrently, so the
// lock is held through the commit only when it carries deferred attempts.
func (s *session) startAttempt(ctx context.Context, att *domain.Attempt) error {
	s.wmu.Lock()
	if len(s.deferred) == 0 {
		s.wmu.Unlock()
		return s.retrying(ctx, func() error { return s.store.StartAttempt(ctx, s.owner, att) })
	}
	defer s.wmu.Unlock()
	if err := s.retrying(ctx, func() error { return s.store.CommitAttempts(ctx, s.owner, s.deferred, att, nil) }); err != nil {
		return err
	}
	s.deferred = nil
	return nil
}

// flush commits the deferred attempts, with ch when it is set; with nothing deferred, ch
// alone is a plain transition.
func (s *session) flush(ctx context.Context, ch *domain.Change) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.deferred) == 0 {
		if ch == nil {
			return nil
		}
		return s.retrying(ctx, func() error { return s.store.Transition(ctx, s.run.ID, *ch) })
	}
	if err := s.retrying(ctx, func() error { return s.store.CommitAttempts(ctx, s.owner, s.deferred, nil, ch) }); err != nil {
		return err
	}
	s.deferred = nil
	return nil
}

// handBack commits what is deferred and returns the lease, for a pass that stops before the
// run ended. A failed commit leaves the deferred attempts to be recomputed by the next owner.
func (s *session) handBack(ctx context.Context) {
	if err := s.flush(ctx, nil); err != nil {
		s.logger.Warn("deferred attempts not recorded; the next owner recomputes them", "run_id", s.run.ID, "error", err)
	}
	s.store.ReleaseLease(ctx, s.run.ID, s.owner)
}

// changeIfLast returns the run's transition when nothing else is in flight or pending, so
// that it shares the commit of the result that decides it.
func (s *session) changeIfLast() *domain.Change {
	if s.inflight > 0 {
		return nil
	}
	if s.stopping {
		return s.stopChange()
	}
	if len(s.pending) > 0 {
		return nil
	}
	// A step once complete stays so: the steps before doneUpTo are not looked at again.
	for s.doneUpTo < len(s.p.Steps) && s.pr.done[s.p.Steps[s.doneUpTo].ID] {
		s.doneUpTo++
	}
	if s.doneUpTo < len(s.p.Steps) {
		return nil
	}
	return &domain.Change{To: domain.StateSucceeded, Reason: "all steps completed", Actor: s.e.Actor, Owner: s.owner}
}

func (s *session) stopChange() *domain.Change {
	switch {
	case s.failure == nil && s.review != "" && s.retryAt.IsZero():
		return &domain.Change{To: domain.StateNeedsReview, Reason: truncate(s.review, 500), Actor: s.e.Actor, Owner: s.owner}
	case s.failure == nil && s.waiting != "" && s.retryAt.IsZero():
		return &domain.Change{To: domain.StateWaitingExternal, Reason: s.waiting, Actor: s.e.Actor, Owner: s.owner, NextAttemptAt: s.waitUntil}
	case s.failure != nil:
		return &domain.Change{To: domain.StateFailedPermanent, Reason: "dead-lettered: " + truncate(s.failure.err, 200), Actor: s.e.Actor, Owner: s.owner,
			ErrorClass: s.failure.class, Error: s.failure.err, FailedStep: s.failure.step}
	case !s.retryAt.IsZero():
		return &domain.Change{To: domain.StateFailedTransient, Reason: "retry at " + s.retryAt.UTC().Format(time.RFC3339Nano), Actor: s.e.Actor, Owner: s.owner,
			NextAttemptAt: s.retryAt}
	}
	return nil
}

// finish applies the run's transition when no result commit carried it.
func (s *session) finish(parent, ctx context.Context) error {
	if s.run.State != domain.StateProcessing {
		return nil
	}
	wctx := context.WithoutCancel(parent)
	paused := s.failure != nil || !s.retryAt.IsZero() || s.review != "" || s.waiting != ""
	if s.disabled != "" && !paused {
		s.handBack(wctx)
		return fmt.Errorf("run %s stopped after its current step and waits: pipeline %s is disabled (%s): %w", s.run.ID, s.run.Pipeline, s.disabled, ErrDisabled)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, errRunTimeout) && !paused {
		// Interrupted or lease lost: hand the run back for the next owner.
		s.handBack(wctx)
		if errors.Is(cause, domain.ErrLeaseLost) {
			return fmt.Errorf("run %s: %w", s.run.ID, cause)
		}
		return fmt.Errorf("run %s stopped before it finished; the same command resumes it: %w", s.run.ID, ErrInterrupted)
	}
	if errors.Is(context.Cause(ctx), errRunTimeout) && s.failure == nil {
		s.setFailure("", domain.ClassPermanent, fmt.Sprintf("%v (%s)", errRunTimeout, s.p.Limits.RunTimeout))
	}
	ch := s.changeIfLast()
	if ch == nil && (s.failure != nil || !s.retryAt.IsZero() || s.review != "" || s.waiting != "") {
		ch = s.stopChange()
	}
	s.settling(ch)
	s.leave(ch)
	if err := s.flush(wctx, ch); err != nil {
		return err
	}
	s.applied(ch)
	return nil
}

// leave notes that ch, about to be written, moves the run out of processing (see pass).
func (s *session) leave(ch *domain.Change) {
	if ch != nil && ch.To != domain.StateProcessing {
		s.leaving.Store(true)
	}
}

// settling tells the caller that the run is settled when ch ends this call: nothing is left
// to execute but its write. A transient failure is not: this process retries it when due.
func (s *session) settling(ch *domain.Change) {
	if ch == nil || s.opts.Settled == nil || ch.To == domain.StateProcessing || ch.To == domain.StateFailedTransient {
		return
	}
	s.opts.Settled()
}

// applied mirrors a committed transition on the session's copy of the run, which is what the
// caller gets back.
func (s *session) applied(ch *domain.Change) {
	if ch == nil {
		return
	}
	now := time.Now()
	r := s.run
	r.State, r.UpdatedAt = ch.To, now
	if o := s.e.Observer; o != nil {
		to := ch.To
		s.tell(func() { o.RunChanged(r.Pipeline, to) })
	}
	r.LeaseOwner, r.NextAttemptAt = "", ch.NextAttemptAt
	r.ErrorClass, r.Error, r.FailedStep = ch.ErrorClass, ch.Error, ch.FailedStep
	if ch.To == domain.StateSucceeded || ch.To == domain.StateFailedPermanent {
		r.FinishedAt = now
	}
}

// drain waits for units still in flight after an error, discarding their results.
func (s *session) drain() {
	for s.inflight > 0 {
		s.next()
		s.inflight--
	}
}

func (s *session) redactJSON(v any) []byte {
	if v == nil {
		return nil
	}
	b, err := domain.MarshalJSON(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return s.redact.JSON(b)
}

// redactCalls prepares model calls for the ledger: secrets out of every text.
func (s *session) redactCalls(calls []domain.ModelCall) []domain.ModelCall {
	out := make([]domain.ModelCall, len(calls))
	for i, c := range calls {
		c.Request = s.redact.JSON(c.Request)
		c.Response = s.redact.String(c.Response)
		c.Parsed = s.redact.JSON(c.Parsed)
		c.Reasons = s.redact.JSON(c.Reasons)
		c.Error = s.redact.String(c.Error)
		// What the provider sends back about itself is untrusted text like the answer.
		c.RequestID = s.redact.String(c.RequestID)
		c.ResponseModel = s.redact.String(c.ResponseModel)
		out[i] = c
	}
	return out
}

func (s *session) stepKeyBase() string {
	if s.run.StepKeyBase != "" {
		return s.run.StepKeyBase
	}
	return s.run.IdempotencyKey
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// heartbeat renews the lease every third of its TTL until stopped; losing the lease cancels
// the pass, since another process now owns the run.
func (e *Engine) heartbeat(ctx context.Context, runID, owner string, lost func(error), renewed func(time.Time)) (stop func()) {
	// A timer, not a goroutine with a ticker: most runs end before their first renewal, and a
	// goroutine, a ticker and the wait for its exit cost a busy worker 7% of its CPU per run.
	ttl := e.leaseTTL()
	every := max(ttl/3, time.Millisecond) // a lease of a few nanoseconds must not renew in a loop
	var (
		mu      sync.Mutex
		stopped bool
		renews  sync.WaitGroup
		t       *time.Timer
	)
	renew := func() {
		mu.Lock()
		if stopped || ctx.Err() != nil {
			mu.Unlock()
			return
		}
		renews.Add(1)
		mu.Unlock()
		defer renews.Done()
		until := time.Now().Add(ttl)
		err := e.Store.RenewLease(ctx, runID, owner, until)
		if errors.Is(err, domain.ErrLeaseLost) {
			lost(err)
			return
		}
		if err == nil {
			renewed(until)
		}
		mu.Lock()
		if !stopped {
			t.Reset(every)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(every, renew)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
		// A renewal under way finishes before the run's end is written.
		renews.Wait()
	}
}
