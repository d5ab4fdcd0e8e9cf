package operate

import (
	"slices"
	"time"
)

// InCausalOrder merges a run's transitions (in the ledger's order, kept whatever their clocks
// say) with what else happened to it (steps, notes, model calls; put in time order, stably),
// each of those before the first transition later than it. The ledger's clock counts
// milliseconds, which a submit, its claim and the whole of a quick run can share; within one,
// what happens while a run is processing comes after a transition that does not leave
// processing (a submit, a claim, an approval) and before one that does (the end, a retry, a
// pause, a hand-back: what the step caused). A step of the run's next processing never shares
// that millisecond: a run leaves processing for a retry only for a delay too long to wait for
// in its slot, and a run handed back had no step running.
func InCausalOrder[T any](transitions, others []T, at func(T) time.Time, leavesProcessing func(T) bool) []T {
	others = slices.Clone(others)
	slices.SortStableFunc(others, func(a, b T) int { return at(a).Compare(at(b)) })
	out := make([]T, 0, len(transitions)+len(others))
	for _, t := range transitions {
		for len(others) > 0 && (at(others[0]).Before(at(t)) || at(others[0]).Equal(at(t)) && leavesProcessing(t)) {
			out = append(out, others[0])
			others = others[1:]
		}
		out = append(out, t)
	}
	return append(out, others...)
}
