package domain

import (
	"encoding/json"
	"time"
)

// LeaseHandedBack is the lease expiry of a processing run handed back on purpose (a worker
// that stops, a claimed run it did not start, an operator's enqueue): long past, so any worker
// takes the run over at once, and unlike any lease that ran out, so the takeover says which.
var LeaseHandedBack = time.UnixMilli(1)

// HandedBack says whether a lease expiry is LeaseHandedBack.
func HandedBack(expires time.Time) bool { return expires.Equal(LeaseHandedBack) }

// Run is one execution of a pipeline for one input, as the ledger holds it.
type Run struct {
	ID             string
	Pipeline       string
	IdempotencyKey string
	InputHash      string
	Input          json.RawMessage
	SpecText       string
	SpecHash       string
	SpecPath       string
	Version        string
	State          RunState
	LeaseOwner     string
	LeaseExpires   time.Time
	NextAttemptAt  time.Time
	ReplayOf       string
	// StepKeyBase is the idempotency key step keys derive from: the run's own, or for a replay
	// the original run's, so that effects already applied are deduplicated.
	StepKeyBase string
	DryRun      bool
	ErrorClass  ErrorClass
	Error       string
	FailedStep  string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	FinishedAt  time.Time
	// Unstarted is set by a claim on a run that has no attempt at all: whoever claimed it may
	// start at the first step without reading its history back. It is not stored.
	Unstarted bool
}

// Attempt outcomes recorded for a step.
const (
	// OutcomeRunning: the intent was committed and the effect may be under way.
	OutcomeRunning   = "running"
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeSkipped   = "skipped"
	// OutcomeGuarded: the guard found the effect already in place; nothing was written.
	OutcomeGuarded = "guarded"
	// OutcomeDryRun: the side effect was rendered and recorded, not sent.
	OutcomeDryRun = "dry_run"
	// OutcomeAbandoned: the process died while the attempt was running.
	OutcomeAbandoned = "abandoned"
	// OutcomeNeedsReview: the attempt produced something a person must decide on; the run
	// pauses in needs_review.
	OutcomeNeedsReview = "needs_review"
	// OutcomeWaiting: a wait step is waiting for its signal; the run pauses in waiting_external.
	OutcomeWaiting = "waiting"
	// OutcomeReused: a replay took the step's recorded output from the run it replays.
	OutcomeReused = "reused"
)

// Completed reports whether an outcome lets dependent steps proceed.
func Completed(outcome string) bool {
	switch outcome {
	case OutcomeSucceeded, OutcomeSkipped, OutcomeGuarded, OutcomeDryRun, OutcomeReused:
		return true
	}
	return false
}

// NoItem is the item index of a step without for_each, and of the step-level row of a
// for_each step that collects the item outputs.
const NoItem = -1

// Attempt is one try of one step (or one for_each item) of a run.
type Attempt struct {
	ID         int64
	RunID      string
	StepID     string
	ItemIndex  int
	Attempt    int
	StepKey    string
	StartedAt  time.Time
	FinishedAt time.Time
	DurationMS int64
	Outcome    string
	ErrorClass ErrorClass
	Error      string
	// Request and Response are redacted JSON documents of what was sent and received.
	Request  json.RawMessage
	Response json.RawMessage
	// Output is the step output as JSON, set once the attempt completed.
	Output json.RawMessage
	// Calls are the model calls the attempt made, recorded with it.
	Calls []ModelCall
}

// ModelCall is one request to a model and what became of its answer.
type ModelCall struct {
	Reask    int
	Provider string
	Model    string
	// Request is the redacted JSON of the messages and settings sent.
	Request json.RawMessage
	// Response is the raw answer text; Parsed the JSON value, when it parsed.
	Response     string
	Parsed       json.RawMessage
	FinishReason string
	// Outcome: accepted, rejected, review, refused, truncated, filtered, invalid_json or error.
	Outcome string
	// Verdict is pass, reject or review when the gate ran; Reasons its JSON list of reasons.
	Verdict          string
	Reasons          json.RawMessage
	PromptTokens     int
	CompletionTokens int
	LatencyMS        int64
	Error            string
	At               time.Time

	// Family is the model family the request was shaped for (chat, reasoning).
	Family string
	// ClientRequestID is the X-Client-Request-Id pipectl sent: step key, attempt and re-ask.
	ClientRequestID string
	// RequestID is the provider's id for the call (x-request-id), for its logs and support.
	RequestID string
	// ResponseModel is the model the provider says answered, often a dated snapshot.
	ResponseModel string
	// ProcessingMS is the provider's own processing time (openai-processing-ms); nil when not
	// reported. ReasoningTokens is the part of CompletionTokens spent reasoning, when reported.
	ProcessingMS    *int64
	ReasoningTokens *int
}

// Event is one state transition of a run.
type Event struct {
	ID     int64
	RunID  string
	From   RunState
	To     RunState
	Reason string
	Actor  string
	At     time.Time
}

// Note is an operator's remark tied to a run.
type Note struct {
	ID    int64
	RunID string
	Actor string
	Text  string
	At    time.Time
}
