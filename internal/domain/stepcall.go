package domain

import "context"

// StepCall is what a step executor receives for one attempt.
type StepCall struct {
	RunID          string
	Pipeline       string
	IdempotencyKey string
	Step           *Step
	// ItemIndex is the for_each index, or NoItem.
	ItemIndex int
	Attempt   int
	// StepKey is stable across retries, resumes and replays: the side effect's idempotency key.
	StepKey string
	DryRun  bool
	// Offline forbids all I/O with the outside world, reads and guards included (pipeline
	// tests): reads are answered by the executor's fixtures, guards count as not done.
	Offline bool
	// Workdir anchors relative paths: the folder of the pipeline file.
	Workdir string
	// Render evaluates the ${{ }} templates inside a value with the step's variables in scope.
	Render func(v any) (any, error)
	// RenderWith is Render with extra variables, such as response for a guard's done_if.
	RenderWith func(v any, extra map[string]any) (any, error)
	// Vars are the step's expression variables (inputs, steps, run), for policy rules. Read only.
	Vars map[string]any
	// ModelCalled, when set, hears of each model call as soon as its answer was judged (a live
	// display); the calls are still returned in the result. It must not block.
	ModelCalled func(ModelCall)
	// Redactor knows every secret of the run. Executors redact a text before they cut it (a
	// cut secret is no longer recognised), and add the values they compute from secrets, such
	// as a header built from one, so that a server echoing them back is redacted too.
	Redactor *Redactor
	// Fence, when set, must be called after any guard and just before the side effect (an
	// http write, an exec command). An error, which wraps ErrLeaseLost when another process
	// holds the run now, means this process may no longer act for the run (it was paused or
	// cut off past its lease) and the effect must not happen.
	Fence func(ctx context.Context) error
}

// StepResult is what an attempt produced.
type StepResult struct {
	Output any
	// Outcome is OutcomeSucceeded, OutcomeGuarded or OutcomeDryRun.
	Outcome string
	// Request and Response describe the exchange for the ledger; the engine redacts them.
	Request  any
	Response any
	// Calls are model calls to record with the attempt, also when it failed.
	Calls []ModelCall
	// Review explains an OutcomeNeedsReview result: why a person must look.
	Review string
}

// StepExecutor runs one attempt of one step type. Errors must carry their class
// (Transient, Permanent); an unclassified error counts as unknown. Implementations must stop
// when ctx ends and must be safe for concurrent use.
type StepExecutor interface {
	Execute(ctx context.Context, call *StepCall) (StepResult, error)
}
