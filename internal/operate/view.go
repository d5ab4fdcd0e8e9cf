package operate

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

// The documents below are what runs show --format json prints and what the API returns: one
// shape for both, so a script can move from one to the other.

type RunView struct {
	ID             string          `json:"id"`
	Pipeline       string          `json:"pipeline"`
	State          domain.RunState `json:"state"`
	IdempotencyKey string          `json:"idempotency_key"`
	InputHash      string          `json:"input_hash"`
	Input          json.RawMessage `json:"input,omitempty"`
	SpecHash       string          `json:"spec_hash"`
	SpecPath       string          `json:"spec_path,omitempty"`
	Version        string          `json:"pipectl_version"`
	DryRun         bool            `json:"dry_run,omitempty"`
	ReplayOf       string          `json:"replay_of,omitempty"`
	LeaseOwner     string          `json:"lease_owner,omitempty"`
	NextAttemptAt  *time.Time      `json:"next_attempt_at,omitempty"`
	ErrorClass     string          `json:"error_class,omitempty"`
	Error          string          `json:"error,omitempty"`
	FailedStep     string          `json:"failed_step,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	FinishedAt     *time.Time      `json:"finished_at,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := stamp(t)
	return &u
}

// stamp is a time at the ledger's precision (milliseconds), so that a run just created reads
// the same as when it is read back.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

func RunViews(runs []*domain.Run) []RunView {
	out := make([]RunView, len(runs))
	for i, r := range runs {
		out[i] = RunViewOf(r)
	}
	return out
}

func RunViewOf(r *domain.Run) RunView {
	return RunView{
		ID: r.ID, Pipeline: r.Pipeline, State: r.State, IdempotencyKey: r.IdempotencyKey, InputHash: r.InputHash,
		SpecHash: r.SpecHash, SpecPath: r.SpecPath, Version: r.Version, DryRun: r.DryRun, ReplayOf: r.ReplayOf,
		LeaseOwner: r.LeaseOwner, NextAttemptAt: optTime(r.NextAttemptAt), ErrorClass: string(r.ErrorClass),
		Error: r.Error, FailedStep: r.FailedStep, CreatedAt: stamp(r.CreatedAt), UpdatedAt: stamp(r.UpdatedAt),
		FinishedAt: optTime(r.FinishedAt),
	}
}

type StepView struct {
	Step     string `json:"step"`
	Outcome  string `json:"outcome"`
	Attempts int    `json:"attempts"`
	Items    int    `json:"items,omitempty"`
}

type AttemptView struct {
	Step       string          `json:"step"`
	Item       *int            `json:"item,omitempty"`
	Attempt    int             `json:"attempt"`
	StepKey    string          `json:"step_key"`
	Outcome    string          `json:"outcome"`
	StartedAt  time.Time       `json:"started_at"`
	DurationMS int64           `json:"duration_ms"`
	ErrorClass string          `json:"error_class,omitempty"`
	Error      string          `json:"error,omitempty"`
	Request    json.RawMessage `json:"request,omitempty"`
	Response   json.RawMessage `json:"response,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
}

type EventView struct {
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor"`
	At     time.Time `json:"at"`
}

type NoteView struct {
	Actor string    `json:"actor"`
	Text  string    `json:"text"`
	At    time.Time `json:"at"`
}

type RunDoc struct {
	Run        RunView       `json:"run"`
	Steps      []StepView    `json:"steps"`
	Attempts   []AttemptView `json:"attempts"`
	Events     []EventView   `json:"events"`
	ModelCalls []CallView    `json:"model_calls"`
	Notes      []NoteView    `json:"notes"`
	// Held is what a run in needs_review waits on; absent in other states.
	Held *HeldView `json:"held,omitempty"`
}

type CallView struct {
	Step             string          `json:"step"`
	Attempt          int             `json:"attempt"`
	Item             *int            `json:"item,omitempty"`
	Reask            int             `json:"reask"`
	Provider         string          `json:"provider,omitempty"`
	Model            string          `json:"model"`
	Outcome          string          `json:"outcome"`
	Verdict          string          `json:"verdict,omitempty"`
	Reasons          json.RawMessage `json:"reasons,omitempty"`
	FinishReason     string          `json:"finish_reason,omitempty"`
	PromptTokens     int             `json:"prompt_tokens"`
	CompletionTokens int             `json:"completion_tokens"`
	LatencyMS        int64           `json:"latency_ms"`
	// What ties the call to the provider's side; absent when the provider did not say.
	Family          string          `json:"family,omitempty"`
	ClientRequestID string          `json:"client_request_id,omitempty"`
	RequestID       string          `json:"request_id,omitempty"`
	ResponseModel   string          `json:"response_model,omitempty"`
	ProcessingMS    *int64          `json:"processing_ms,omitempty"`
	ReasoningTokens *int            `json:"reasoning_tokens,omitempty"`
	Request         json.RawMessage `json:"request"`
	Response        string          `json:"response"`
	Parsed          json.RawMessage `json:"parsed,omitempty"`
	Error           string          `json:"error,omitempty"`
	At              time.Time       `json:"at"`
}

func callViews(cs []ledger.CallRecord) []CallView {
	out := make([]CallView, len(cs))
	for i, c := range cs {
		out[i] = CallView{Step: c.StepID, Attempt: c.Attempt, Reask: c.Reask, Provider: c.Provider, Model: c.Model, Outcome: c.Outcome,
			Verdict: c.Verdict, Reasons: c.Reasons, FinishReason: c.FinishReason, PromptTokens: c.PromptTokens,
			CompletionTokens: c.CompletionTokens, LatencyMS: c.LatencyMS, Request: c.Request, Response: c.Response,
			Parsed: c.Parsed, Error: c.Error, At: c.At.UTC(), Family: c.Family, ClientRequestID: c.ClientRequestID,
			RequestID: c.RequestID, ResponseModel: c.ResponseModel, ProcessingMS: c.ProcessingMS, ReasoningTokens: c.ReasoningTokens}
		if c.ItemIndex != domain.NoItem {
			item := c.ItemIndex
			out[i].Item = &item
		}
	}
	return out
}

// summarizeSteps gives each step its latest outcome, in the order steps first appeared.
func summarizeSteps(attempts []domain.Attempt) []StepView {
	index := map[string]int{}
	out := []StepView{}
	for _, a := range attempts {
		i, ok := index[a.StepID]
		if !ok {
			i = len(out)
			index[a.StepID] = i
			out = append(out, StepView{Step: a.StepID})
		}
		if a.ItemIndex == domain.NoItem {
			out[i].Outcome = a.Outcome
			if out[i].Items == 0 {
				out[i].Attempts++ // a for_each step's own row collects its items; it is no attempt
			}
		} else {
			out[i].Items = max(out[i].Items, a.ItemIndex+1)
			if out[i].Outcome == "" || out[i].Outcome == domain.OutcomeRunning {
				out[i].Outcome = "in progress"
			}
			out[i].Attempts++
		}
	}
	return out
}

func attemptViews(as []domain.Attempt) []AttemptView {
	out := make([]AttemptView, len(as))
	for i, a := range as {
		out[i] = AttemptView{Step: a.StepID, Attempt: a.Attempt, StepKey: a.StepKey, Outcome: a.Outcome, StartedAt: a.StartedAt.UTC(),
			DurationMS: a.DurationMS, ErrorClass: string(a.ErrorClass), Error: a.Error, Request: a.Request, Response: a.Response, Output: a.Output}
		if a.ItemIndex != domain.NoItem {
			item := a.ItemIndex
			out[i].Item = &item
		}
	}
	return out
}

func eventViews(es []domain.Event) []EventView {
	out := make([]EventView, len(es))
	for i, e := range es {
		out[i] = EventView{From: string(e.From), To: string(e.To), Reason: e.Reason, Actor: e.Actor, At: e.At.UTC()}
	}
	return out
}

func noteViews(ns []domain.Note) []NoteView {
	out := make([]NoteView, len(ns))
	for i, n := range ns {
		out[i] = NoteView{Actor: n.Actor, Text: n.Text, At: n.At.UTC()}
	}
	return out
}

// Show returns a run's full document: its state, steps, attempts, transitions, model calls
// and notes, with the stored input.
func (o *Ops) Show(ctx context.Context, id string) (*RunDoc, *domain.Run, error) {
	run, err := o.Run(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	attempts, err := o.Store.Attempts(ctx, run.ID)
	if err != nil {
		return nil, nil, err
	}
	events, err := o.Store.Events(ctx, run.ID)
	if err != nil {
		return nil, nil, err
	}
	notes, err := o.Store.Notes(ctx, run.ID)
	if err != nil {
		return nil, nil, err
	}
	calls, err := o.Store.ModelCalls(ctx, run.ID)
	if err != nil {
		return nil, nil, err
	}
	doc := &RunDoc{Run: RunViewOf(run), Steps: summarizeSteps(attempts), Attempts: attemptViews(attempts), Events: eventViews(events),
		ModelCalls: callViews(calls), Notes: noteViews(notes), Held: o.Held(ctx, run, attempts)}
	doc.Run.Input = json.RawMessage(run.Input)
	return doc, run, nil
}

// EventsOf returns a run's transitions as documents.
func (o *Ops) EventsOf(ctx context.Context, runID string) ([]EventView, error) {
	es, err := o.Store.Events(ctx, runID)
	if err != nil {
		return nil, err
	}
	return eventViews(es), nil
}

// List returns runs, newest first.
func (o *Ops) List(ctx context.Context, f ledger.RunFilter) ([]*domain.Run, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, errorf(KindInvalid, "unknown state %q; states: %s", f.State, StatesList())
	}
	return o.Store.ListRuns(ctx, f)
}

// StatesList names every run state, for messages.
func StatesList() string {
	s := ""
	for i, st := range domain.RunStates {
		if i > 0 {
			s += ", "
		}
		s += string(st)
	}
	return s
}

// NextStep is the command an operator most likely wants for a run in its state, or "" when
// the run needs nothing (succeeded, or in the hands of a worker).
func NextStep(r *domain.Run) string {
	switch r.State {
	case domain.StateFailedPermanent:
		return "pipectl dlq redrive " + r.ID + " (after fixing the cause), or pipectl replay " + r.ID
	case domain.StateNeedsReview:
		return "pipectl review " + r.ID + " (shows what is to be decided)"
	case domain.StateWaitingExternal:
		return "pipectl signal " + r.ID + " STEP --data FILE"
	}
	return ""
}
