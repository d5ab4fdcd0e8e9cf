package domain

// RunState is where a run stands in its lifecycle. The set is closed: the ledger enforces it
// with a CHECK constraint and every change goes through CanTransition.
type RunState string

// The run states of SPEC section 3.
const (
	// StateQueued: created, waiting for a process to claim it.
	StateQueued RunState = "queued"
	// StateProcessing: owned by a process that is executing its steps.
	StateProcessing RunState = "processing"
	// StateSucceeded: every step finished; terminal.
	StateSucceeded RunState = "succeeded"
	// StateFailedTransient: a step failed in a way worth retrying once next_attempt_at passes.
	StateFailedTransient RunState = "failed_transient"
	// StateFailedPermanent: dead-lettered; only a redrive or replay brings it back.
	StateFailedPermanent RunState = "failed_permanent"
	// StateWaitingExternal: paused until a wait step is signalled or times out.
	StateWaitingExternal RunState = "waiting_external"
	// StateNeedsReview: paused until a person approves or rejects.
	StateNeedsReview RunState = "needs_review"
)

// RunStates lists every state.
var RunStates = []RunState{
	StateQueued, StateProcessing, StateSucceeded, StateFailedTransient,
	StateFailedPermanent, StateWaitingExternal, StateNeedsReview,
}

var transitions = map[RunState][]RunState{
	StateQueued:          {StateProcessing},
	StateProcessing:      {StateSucceeded, StateFailedTransient, StateFailedPermanent, StateWaitingExternal, StateNeedsReview},
	StateFailedTransient: {StateProcessing, StateFailedPermanent},
	StateWaitingExternal: {StateProcessing, StateFailedPermanent},
	StateNeedsReview:     {StateProcessing, StateFailedPermanent},
	StateFailedPermanent: {StateQueued},
}

// CanTransition reports whether a run may move from one state to another.
func CanTransition(from, to RunState) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// SourcesOf lists the states from which a run may move to the given state.
func SourcesOf(to RunState) []RunState {
	var out []RunState
	for _, from := range RunStates {
		if CanTransition(from, to) {
			out = append(out, from)
		}
	}
	return out
}

// Valid reports whether s is one of the run states.
func (s RunState) Valid() bool {
	_, ok := transitions[s]
	return ok || s == StateSucceeded
}

// Terminal reports whether no transition leaves s.
func (s RunState) Terminal() bool { return s == StateSucceeded }

// Paused reports whether the run waits for a person or an outside signal.
func (s RunState) Paused() bool { return s == StateNeedsReview || s == StateWaitingExternal }
