package engine_test

import (
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// TestSettledOnceWhenAFailedIfIsFollowedByASkip: two steps become ready together; the first
// one's if fails, which dead-letters the run in the same write; the second, a skip, must not
// be activated after that: it wrote the run's end a second time (the run failed with "lease
// lost" although it was dead-lettered) and called Settled twice.
func TestSettledOnceWhenAFailedIfIsFollowedByASkip(t *testing.T) {
	b := setup(t)
	p := b.pipeline(t, header+`
steps:
  - {id: bad, type: transform, if: "${{ inputs.x }}", output: 1, needs: []}
  - {id: skipped, type: transform, if: "${{ false }}", output: 2, needs: []}
`)
	n := 0
	res, err := b.eng.Run(t.Context(), p, map[string]any{"x": "not a boolean"}, engine.RunOptions{Settled: func() { n++ }})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Run.State != domain.StateFailedPermanent || res.Run.FailedStep != "bad" {
		t.Fatalf("state %s (failed step %q), want failed_permanent at bad", res.Run.State, res.Run.FailedStep)
	}
	if n != 1 {
		t.Fatalf("Settled called %d times, want once", n)
	}
}
