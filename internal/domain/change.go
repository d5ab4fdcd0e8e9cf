package domain

import "time"

// Claim asks for a new run to move straight to processing under an owner, in the commit that
// creates it.
type Claim struct {
	Owner      string
	LeaseUntil time.Time
}

// Change describes a state transition of a run.
type Change struct {
	To     RunState
	Reason string
	Actor  string
	// Owner must hold the lease when the run leaves processing; empty skips the check (an
	// operator acting on a paused run holds no lease).
	Owner string
	// LeaseOwner and LeaseUntil set the lease when the run enters processing.
	LeaseOwner string
	LeaseUntil time.Time
	// NextAttemptAt is when a failed_transient run is due again.
	NextAttemptAt time.Time
	// ErrorClass, Error and FailedStep describe a failure.
	ErrorClass ErrorClass
	Error      string
	FailedStep string
}

// ClaimFilter narrows what a worker takes from the queue.
type ClaimFilter struct {
	// Pipelines restricts claims to these pipelines; empty means all.
	Pipelines []string
	// MaxPerPipeline caps the runs of one pipeline in processing across all workers; 0 means
	// no cap.
	MaxPerPipeline int
}

// Finished is a run that a worker executed to its end (or pause) while its claim still held
// it locked and uncommitted: a run of pure steps only, which needs no lease of its own since
// nothing it did can be seen outside until the claim commits. The claim writes its attempts
// and its transition instead of moving it to processing.
type Finished struct {
	// Run is the run as the worker left it, in its final state.
	Run      *Run
	Attempts []*Attempt
	// Change takes the run out of processing (succeeded, dead-lettered, paused or a retry).
	Change Change
	// Committed, when set, is called once the claim committed the run's writes: what the
	// worker tells about a run (logs, metrics) must not precede its record.
	Committed func()
}
