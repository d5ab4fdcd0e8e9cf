package engine_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

// TestSettledComesOnceBeforeTheFinalWrite: a worker lets a slot start its next run when the
// engine says a run is settled, so the engine must say it only when nothing is left to
// execute: after the last request of the last step (retries included), before the final
// transition is written (the ledger still says processing), once, and never for a run that
// waits for a retry in this process.
func TestSettledComesOnceBeforeTheFinalWrite(t *testing.T) {
	tests := []struct {
		name     string
		script   []func(http.ResponseWriter, *http.Request) bool
		requests int64
		want     domain.RunState
	}{
		{"succeeds at once", nil, 1, domain.StateSucceeded},
		{"succeeds after transient failures", []func(http.ResponseWriter, *http.Request) bool{status(503), status(502)}, 3, domain.StateSucceeded},
		{"dead-lettered", []func(http.ResponseWriter, *http.Request) bool{status(401)}, 1, domain.StateFailedPermanent},
		{"retries exhausted", []func(http.ResponseWriter, *http.Request) bool{status(503), status(503), status(503)}, 3, domain.StateFailedPermanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tg := newTarget(t)
			tg.script = tc.script
			p := b.pipeline(t, header+`
defaults:
  retry: {max_attempts: 3, initial_interval: 5ms, max_interval: 20ms}
steps:
  - {id: post, type: http, method: PUT, url: "`+tg.URL+`/x"}
  - {id: after, type: transform, output: 1}
`)
			type call struct {
				requests int64
				states   []domain.RunState
			}
			var calls []call
			settled := func() {
				runs, err := b.store.ListRuns(context.Background(), ledger.RunFilter{Pipeline: "t"})
				if err != nil {
					t.Error(err)
				}
				var states []domain.RunState
				for _, r := range runs {
					states = append(states, r.State)
				}
				calls = append(calls, call{tg.total.Load(), states})
			}
			res := b.run(t, p, map[string]any{}, engine.RunOptions{Settled: settled})
			if res.Run.State != tc.want {
				t.Fatalf("state %s (%s), want %s", res.Run.State, res.Run.Error, tc.want)
			}
			if len(calls) != 1 {
				t.Fatalf("Settled called %d times, want once", len(calls))
			}
			c := calls[0]
			if c.requests != tc.requests || tg.total.Load() != tc.requests {
				t.Fatalf("Settled came after %d requests; %d in all, want %d: something was executed after it", c.requests, tg.total.Load(), tc.requests)
			}
			if len(c.states) != 1 || c.states[0] != domain.StateProcessing {
				t.Fatalf("the ledger said %v when Settled came, want [processing]: the final write came first", c.states)
			}
		})
	}
}
