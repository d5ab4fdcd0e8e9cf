package domain

import (
	"encoding/json"
	"time"
)

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
	DryRun         bool
	ErrorClass     ErrorClass
	Error          string
	FailedStep     string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     time.Time
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
)

// Completed reports whether an outcome lets dependent steps proceed.
func Completed(outcome string) bool {
	switch outcome {
	case OutcomeSucceeded, OutcomeSkipped, OutcomeGuarded, OutcomeDryRun:
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
