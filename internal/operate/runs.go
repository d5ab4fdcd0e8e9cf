package operate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
)

// InputError is a run input that does not match the pipeline's inputs schema.
type InputError struct {
	Pipeline string
	Reasons  []gate.Reason
}

func (e *InputError) Error() string {
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r.String()
	}
	return fmt.Sprintf("input does not match %s's inputs schema: %s", e.Pipeline, strings.Join(parts, "; "))
}

// schemas caches compiled inputs schemas by the parsed pipeline's schema: a server parses
// its pipelines once and checks every request against them.
var schemas sync.Map // *domain.Schema -> compiled schema

type validatorOf interface{ Validate(any) error }

// CheckInput checks a run input against the pipeline's inputs schema and returns it with
// numbers as the schema declares them. The input is untrusted, wherever it came from.
func CheckInput(p *domain.Pipeline, input any) (any, error) {
	if p.Inputs == nil {
		return input, nil
	}
	sch, ok := p.Inputs.Compiled.(validatorOf)
	if ok {
		// compiled when the spec was parsed
	} else if c, ok := schemas.Load(p.Inputs); ok {
		sch = c.(validatorOf)
	} else {
		c, err := gate.CompileSchema(p.Inputs.Location, p.Inputs.Doc)
		if err != nil {
			return nil, fmt.Errorf("%s: inputs schema: %w", p.Name, err)
		}
		schemas.Store(p.Inputs, c)
		sch = c
	}
	if reasons := gate.Violations(sch.Validate(input)); len(reasons) > 0 {
		return nil, &Error{Kind: KindInputSchema, Err: &InputError{Pipeline: p.Name, Reasons: reasons}}
	}
	return coerceInput(p, input), nil
}

func coerceInput(p *domain.Pipeline, in any) any {
	if p.Inputs != nil {
		return gate.Coerce(p.Inputs.Doc, in)
	}
	return in
}

// SubmitRequest creates a queued run for workers.
type SubmitRequest struct {
	Pipeline *domain.Pipeline
	Input    any
	// Key is the run's idempotency key when the pipeline declares none (an API caller's
	// Idempotency-Key, a webhook delivery id, a schedule slot); empty: the pipeline's rule.
	Key string
	// Scheduled makes Key win over the spec's key: a schedule slot has exactly one run,
	// whatever the input says.
	Scheduled bool
}

// Submit checks the input and creates the run as queued; a second submission with the same
// key and input returns the existing run with Duplicate set.
func (o *Ops) Submit(ctx context.Context, actor string, req SubmitRequest) (*engine.Result, error) {
	input, err := CheckInput(req.Pipeline, req.Input)
	if err != nil {
		return nil, err
	}
	eng, err := o.Engine(actor, noProviders)
	if err != nil {
		return nil, err
	}
	key, err := submitKey(eng, req, input)
	if err != nil {
		return nil, err
	}
	return eng.SubmitKeyed(ctx, req.Pipeline, input, key)
}

// submitKey is the run key of a submission of a checked input: the caller's key when the
// pipeline declares none (or for a schedule slot), else the pipeline's key over the input,
// which may not take a schedule slot's prefix. Empty means the engine's default, the input's
// hash. Every way of submitting (one run, a file of runs) goes through here.
func submitKey(eng *engine.Engine, req SubmitRequest, input any) (string, error) {
	if req.Pipeline.Idempotency.Key == "" || req.Scheduled {
		return req.Key, nil
	}
	key, err := eng.RunKey(req.Pipeline, input)
	if err != nil {
		return "", err
	}
	if err := notReserved(key); err != nil {
		return "", err
	}
	return key, nil
}

// ScheduleKeyPrefix starts the run keys of schedule slots. A key computed from an input may not
// start with it: whoever controls an input could otherwise occupy a future slot.
const ScheduleKeyPrefix = "schedule:"

func notReserved(key string) error {
	if strings.HasPrefix(key, ScheduleKeyPrefix) {
		return errorf(KindInvalid, "the idempotency key %q starts with %q, which is reserved for schedule slots", key, ScheduleKeyPrefix)
	}
	return nil
}

// noProviders is given to engines that only create runs: they never call a model.
func noProviders(name string) (llm.Provider, error) {
	return nil, fmt.Errorf("model provider %q: this process only creates runs", name)
}

// Start creates the run for a checked input (or finds the one with the same key) and executes
// it in this process until it ends or pauses.
func (o *Ops) Start(ctx context.Context, actor string, p *domain.Pipeline, input any, providers Providers, opts engine.RunOptions) (*engine.Result, error) {
	eng, err := o.Engine(actor, providers)
	if err != nil {
		return nil, err
	}
	if p.Idempotency.Key != "" && !opts.DryRun {
		key, err := eng.RunKey(p, input)
		if err != nil {
			return nil, err
		}
		if err := notReserved(key); err != nil {
			return nil, err
		}
	}
	return eng.Run(ctx, p, input, opts)
}

// Continue executes a run put back in motion (and leased to this process) until it ends or
// pauses, with the spec and input it stored.
func (o *Ops) Continue(ctx context.Context, actor string, r *domain.Run) (*domain.Run, error) {
	p, err := o.Spec(r)
	if err != nil {
		return nil, err
	}
	input, err := StoredInput(p, r)
	if err != nil {
		return nil, err
	}
	secrets, err := o.secrets(p)
	if err != nil {
		return nil, err
	}
	eng, err := o.Engine(actor, nil)
	if err != nil {
		return nil, err
	}
	return eng.Continue(ctx, p, r, input, engine.RunOptions{Secrets: secrets})
}

func (o *Ops) secrets(p *domain.Pipeline) (map[string]string, error) {
	if o.Secrets == nil {
		return nil, nil
	}
	s, err := o.Secrets(p)
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Err: err}
	}
	return s, nil
}

// Redrivable loads a run and refuses unless it is dead-lettered.
func (o *Ops) Redrivable(ctx context.Context, id string) (*domain.Run, error) {
	r, err := o.Run(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.State != domain.StateFailedPermanent {
		return nil, refused("run %s is %s; only dead-lettered (failed_permanent) runs can be redriven", r.ID, r.State)
	}
	return r, nil
}

// Redrive sends a dead-lettered run back to queued; it is executed after its last completed
// step by whoever claims it.
func (o *Ops) Redrive(ctx context.Context, actor string, r *domain.Run) (*domain.Run, error) {
	if err := o.Store.Transition(ctx, r.ID, domain.Change{To: domain.StateQueued, Actor: actor, Reason: "redriven by " + actor}); err != nil {
		return nil, decisionError(r, err)
	}
	c := *r
	c.State = domain.StateQueued
	return &c, nil
}

// ReplayRequest runs a finished or paused run again as a new run linked to it.
type ReplayRequest struct {
	RunID string
	// From re-executes this step and what depends on it; earlier steps keep their outputs.
	From string
	// Spec, when set, replaces the stored spec (a fixed definition of the same pipeline).
	Spec *domain.Pipeline
	// LLM is "recorded" (answer model calls from the original run) or "live".
	LLM     string
	Enqueue bool
}

// Replay creates the replay run and, unless enqueued, executes it in this process. A result
// with an error is a replay that was created and then failed or paused.
func (o *Ops) Replay(ctx context.Context, actor string, req ReplayRequest) (*engine.ReplayResult, error) {
	if req.LLM == "" {
		req.LLM = "recorded"
	}
	if req.LLM != "recorded" && req.LLM != "live" {
		return nil, errorf(KindInvalid, "llm is recorded or live, not %q", req.LLM)
	}
	orig, err := o.Run(ctx, req.RunID)
	if err != nil {
		return nil, err
	}
	p := req.Spec
	if p == nil {
		if p, err = o.Spec(orig); err != nil {
			return nil, err
		}
	} else if p.Name != orig.Pipeline {
		return nil, errorf(KindInvalid, "--spec is pipeline %s; run %s belongs to %s", p.Name, orig.ID, orig.Pipeline)
	}
	if req.From != "" && p.Step(req.From) == nil {
		return nil, errorf(KindInvalid, "--from %s: the pipeline has no such step", req.From)
	}
	input, err := StoredInput(p, orig)
	if err != nil {
		return nil, err
	}
	var secrets map[string]string
	if !req.Enqueue {
		if secrets, err = o.secrets(p); err != nil {
			return nil, err
		}
	}
	var providers Providers
	if req.LLM == "recorded" {
		calls, err := o.Store.ModelCalls(ctx, orig.ID)
		if err != nil {
			return nil, err
		}
		replayer := llm.NewReplayer("the ledger (run "+orig.ID+")", recordingOf(calls))
		providers = func(string) (llm.Provider, error) { return replayer, nil }
	}
	if req.Enqueue && providers == nil {
		providers = noProviders
	}
	eng, err := o.Engine(actor, providers)
	if err != nil {
		return nil, err
	}
	res, err := eng.Replay(ctx, p, orig, input, engine.ReplayOptions{From: req.From, Enqueue: req.Enqueue}, engine.RunOptions{Secrets: secrets})
	switch {
	case res != nil:
		return res, err
	case errors.Is(err, domain.ErrStateConflict), errors.Is(err, engine.ErrSpecChanged):
		return nil, refused("%v", err)
	case errors.Is(err, engine.ErrDisabled):
		return nil, err
	}
	return nil, &Error{Kind: KindFailed, Err: err}
}

// recordingOf turns a run's recorded model calls into a recording to replay from.
func recordingOf(calls []ledger.CallRecord) llm.Recording {
	rec := llm.Recording{Version: 1}
	for _, c := range calls {
		var req llm.Request
		if err := json.Unmarshal(c.Request, &req); err != nil {
			continue
		}
		ex := llm.Exchange{Key: req.Key(), Request: req}
		if c.Outcome == "error" {
			ex.Error = &llm.RecordedErr{Message: c.Error}
		} else {
			ex.Response = &llm.Response{Content: c.Response, FinishReason: c.FinishReason, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
		}
		rec.Exchanges = append(rec.Exchanges, ex)
	}
	return rec
}

// Note attaches an operator's note to a run.
func (o *Ops) Note(ctx context.Context, actor, runID, text string) (*domain.Run, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, errorf(KindInvalid, "the note is empty")
	}
	r, err := o.Run(ctx, runID)
	if err != nil {
		return nil, err
	}
	return r, o.Store.AddNote(ctx, r.ID, actor, text)
}

// SetDisabled throws (disabled) or resets a pipeline's kill switch. Throwing it needs a
// reason: whoever finds the pipeline off needs to know why.
func (o *Ops) SetDisabled(ctx context.Context, actor, pipeline string, disabled bool, reason string) error {
	if disabled && strings.TrimSpace(reason) == "" {
		return errorf(KindInvalid, "a reason is required: whoever finds the pipeline off needs to know why")
	}
	if strings.TrimSpace(pipeline) == "" {
		return errorf(KindInvalid, "no pipeline named")
	}
	return o.Store.SetPipelineDisabled(ctx, pipeline, disabled, reason, actor)
}
