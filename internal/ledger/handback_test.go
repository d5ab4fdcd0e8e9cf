package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestHandBack: a worker that hands back a run it claimed and did not start ends its lease
// and says why in the run's events, so that the takeover after it is not read as a crash; a
// worker that does not hold the run changes nothing and records nothing.
func TestHandBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		queueRuns(t, s, "p", 1, 1000)
		runs, err := s.ClaimBatch(ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1)
		if err != nil || len(runs) != 1 {
			t.Fatalf("claim: %v %v", runs, err)
		}
		id := runs[0].ID
		if err := s.HandBack(ctx, id, "w2", "not mine"); err != nil {
			t.Fatal(err)
		}
		if again, err := s.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1); err != nil || len(again) != 0 {
			t.Fatalf("a hand-back by a worker that does not hold the run released it: claimed %v (%v)", again, err)
		}
		if err := s.HandBack(ctx, id, "w1", "handed back before it started by w1: no slot"); err != nil {
			t.Fatal(err)
		}
		events, err := s.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, e := range events {
			reasons = append(reasons, e.Reason)
		}
		got := strings.Join(reasons, " | ")
		if strings.Contains(got, "not mine") || !strings.Contains(got, "handed back before it started by w1: no slot") {
			t.Fatalf("events: %s", got)
		}
		again, err := s.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1)
		if err != nil || len(again) != 1 || again[0].ID != id || again[0].LeaseOwner != "w2" {
			t.Fatalf("after the hand-back another worker claims it at once: %v (%v)", again, err)
		}
		// The claim that follows says the run was handed back, not that w1 died.
		events, err = s.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if last := events[len(events)-1]; last.Reason != "taken over from w1 (handed back) by w2" {
			t.Fatalf("the claim after a hand-back is recorded as %q", last.Reason)
		}
	})
}

// TestHandedBackAttemptsSayHandedBack: a run handed back with an attempt still running (a worker
// stopped in the middle of a step) is taken over; the event and the closed attempt both say
// it was handed back, on the one-statement claim and on the capped claim's transaction.
func TestHandedBackAttemptsSayHandedBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for i, f := range []domain.ClaimFilter{{}, {MaxPerPipeline: 5}} {
			pipeline := fmt.Sprintf("hb%d", i)
			id := queueRuns(t, s, pipeline, 1, 1000)[0]
			if _, err := s.ClaimBatch(ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{pipeline}}, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.Exec(s.db.Rebind(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, outcome) VALUES (?, 's', -1, 1, 'k', 5, 'running')`), id); err != nil {
				t.Fatal(err)
			}
			if err := s.ReleaseLease(ctx, id, "w1"); err != nil {
				t.Fatal(err)
			}
			f.Pipelines = []string{pipeline}
			if got, err := s.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), f, 1); err != nil || len(got) != 1 {
				t.Fatalf("%+v: claimed %d (%v)", f, len(got), err)
			}
			events, err := s.Events(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			atts, err := s.Attempts(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if last := events[len(events)-1].Reason; last != "taken over from w1 (handed back) by w2" {
				t.Errorf("%+v: takeover event %q", f, last)
			}
			if atts[0].Outcome != domain.OutcomeAbandoned || atts[0].Error != abandonedHandedBack+" (w1)" {
				t.Errorf("%+v: the attempt left running is %s: %q", f, atts[0].Outcome, atts[0].Error)
			}
		}
	})
}
