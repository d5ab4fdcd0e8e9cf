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
