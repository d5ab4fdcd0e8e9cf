package operate

import (
	"slices"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Moment is what InCausalOrder needs to know of an entry of a run's history.
type Moment struct {
	// At is when the entry is shown as happening.
	At time.Time
	// From and To are a transition's states.
	From, To string
	// Of any other entry: Started is when what it records began (zero: At), and Finished
	// says that it has ended (a step attempt no longer running; a note, a model call).
	Started  time.Time
	Finished bool
}

// InCausalOrder merges a run's transitions (in the ledger's order, kept whatever their clocks
// say) with what else happened to it (steps, notes, model calls, put in time order, stably).
// An entry goes before the first transition that happened after it.
//
// A transition into queued (a submit, a redrive, an approval) happened no later than any
// transition after it in the ledger, and no step runs while a run is queued, so it is dated by
// the earliest time among itself and those that follow: the clocks of two machines (an API
// server that queued a run, a worker that ran it) need not agree. Other transitions keep their
// own times, so that one written late on a clock that runs behind (an operator's laptop) does
// not move the steps its run's worker wrote before it. The ledger's clock counts
// milliseconds, which a submit, a claim, a step and the end it caused can all share; within
// one, an entry goes before a transition that takes the run out of processing if it had
// finished by then (the step that caused the end, the retry, the pause) or began earlier, and
// before any other transition (a submit, a claim, a takeover) only if it began earlier: a step
// that starts in the millisecond of a claim or a takeover is that claim's.
func InCausalOrder[T any](transitions, others []T, moment func(T) Moment) []T {
	others = slices.Clone(others)
	slices.SortStableFunc(others, func(a, b T) int { return moment(a).At.Compare(moment(b).At) })
	// A transition into queued is dated no later than any transition after it; the others by
	// their own clocks (see the comment above).
	dated := make([]time.Time, len(transitions))
	var later time.Time // the earliest time of the transitions after i
	for i := len(transitions) - 1; i >= 0; i-- {
		m := moment(transitions[i])
		dated[i] = m.At
		if m.To == string(domain.StateQueued) && !later.IsZero() && later.Before(m.At) {
			dated[i] = later
		}
		if later.IsZero() || m.At.Before(later) {
			later = m.At
		}
	}
	out := make([]T, 0, len(transitions)+len(others))
	for i, t := range transitions {
		tm := moment(t)
		leaves := tm.From == string(domain.StateProcessing) && tm.To != string(domain.StateProcessing)
		for len(others) > 0 && happenedBefore(moment(others[0]), dated[i], leaves) {
			out = append(out, others[0])
			others = others[1:]
		}
		out = append(out, t)
	}
	return append(out, others...)
}

// happenedBefore says whether an entry happened before a transition dated at, which takes the
// run out of processing when leaves.
func happenedBefore(m Moment, at time.Time, leaves bool) bool {
	if !m.At.Equal(at) {
		return m.At.Before(at)
	}
	started := m.Started
	if started.IsZero() {
		started = m.At
	}
	return started.Before(at) || leaves && m.Finished
}
