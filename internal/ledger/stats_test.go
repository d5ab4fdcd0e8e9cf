package ledger

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// seedRun writes a finished run whose latency and attempts are chosen by the test.
func seedRun(t testing.TB, s *Store, pipeline string, i int, state domain.RunState, latency time.Duration, attempts []int64) {
	t.Helper()
	base := time.Now().Add(-time.Hour)
	s.now = func() time.Time { return base }
	r := &domain.Run{ID: fmt.Sprintf("%s-%04d", pipeline, i), Pipeline: pipeline, IdempotencyKey: fmt.Sprint(i), InputHash: "h", Input: []byte("{}"), SpecText: "s", SpecHash: "h", Version: "t"}
	if _, _, err := s.CreateRun(context.Background(), r, "seed", &domain.Claim{Owner: "o", LeaseUntil: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for n, ms := range attempts {
		outcome := domain.OutcomeSucceeded
		if n < len(attempts)-1 || state == domain.StateFailedPermanent {
			outcome = domain.OutcomeFailed
		}
		a := &domain.Attempt{RunID: r.ID, StepID: "call", ItemIndex: domain.NoItem, Attempt: n + 1, StepKey: "k", StartedAt: base, FinishedAt: base, DurationMS: ms, Outcome: outcome}
		if err := s.FinishAttempt(context.Background(), "o", a, nil); err != nil {
			t.Fatal(err)
		}
	}
	s.now = func() time.Time { return base.Add(latency) }
	if err := s.Transition(context.Background(), r.ID, domain.Change{To: state, Owner: "o", Actor: "seed"}); err != nil {
		t.Fatal(err)
	}
	s.now = time.Now
}

// TestStatsAgainstHandComputedFigures seeds runs with known latencies and attempts and checks
// every figure against values worked out by hand.
func TestStatsAgainstHandComputedFigures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		// Ten runs of "billing": latencies 1..10 s; runs 9 and 10 dead-lettered.
		// Attempts: runs 1-7 one attempt of 100 ms; run 8 two (300, 200 ms); runs 9-10 two failed (500, 400 ms).
		for i := 1; i <= 10; i++ {
			state := domain.StateSucceeded
			attempts := []int64{100}
			switch {
			case i == 8:
				attempts = []int64{300, 200}
			case i >= 9:
				state, attempts = domain.StateFailedPermanent, []int64{500, 400}
			}
			seedRun(t, s, "billing", i, state, time.Duration(i)*time.Second, attempts)
		}
		seedRun(t, s, "other", 1, domain.StateSucceeded, 42*time.Second, []int64{7})
		got, err := s.Stats(context.Background(), time.Now().Add(-2*time.Hour), "billing")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("pipelines %d", len(got))
		}
		p := got[0]
		// Nearest rank over 10 sorted latencies: p50 is rank 5 (5 s), p95 is rank ceil(9.5) = 10 (10 s).
		// 13 attempts, 3 of them retries. Success 8 of 10 finished, dead letters 2 of 10.
		want := Stats{Pipeline: "billing", Runs: 10, Attempts: 13, Succeeded: 8, DeadLettered: 2, Retries: 3,
			SuccessRate: 0.8, DeadLetterRate: 0.2, RetryRate: 3.0 / 13, P50Seconds: 5, P95Seconds: 10}
		if !reflect.DeepEqual(p.Stats, want) {
			t.Fatalf("pipeline stats\n got %+v\nwant %+v", p.Stats, want)
		}
		// Attempt durations sorted: 100 x7, 200, 300, 400, 400, 500, 500 (13 values).
		// p50: rank ceil(6.5) = 7 -> 100 ms; p95: rank ceil(12.35) = 13 -> 500 ms. 8 of 13 attempts succeeded.
		step := p.Steps[0]
		if !reflect.DeepEqual(step.Outcomes, map[string]int{"succeeded": 8, "failed": 5}) {
			t.Fatalf("step outcomes %v", step.Outcomes)
		}
		if step.Step != "call" || step.Attempts != 13 || step.Retries != 3 || step.P50Seconds != 0.1 || step.P95Seconds != 0.5 || math.Abs(step.SuccessRate-8.0/13) > 1e-9 {
			t.Fatalf("step stats %+v", step)
		}
	})
}

// TestStatsCountsEveryOutcomeNotApprovalsNorDryRuns: the attack is a figure that lies. A run
// held for review and approved has two attempts of its step, and the second is no retry; the
// held attempt is counted with its outcome; a dry run's run and attempts stay out of the
// figures and are counted apart.
func TestStatsCountsEveryOutcomeNotApprovalsNorDryRuns(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		base := time.Now().Add(-time.Hour)
		add := func(id string, dry bool, outcomes ...string) {
			r := &domain.Run{ID: id, Pipeline: "triage", IdempotencyKey: id, InputHash: "h", Input: []byte("{}"), SpecText: "s", SpecHash: "h", Version: "t", DryRun: dry}
			if _, _, err := s.CreateRun(ctx, r, "seed", &domain.Claim{Owner: "o", LeaseUntil: base.Add(2 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			for n, o := range outcomes {
				a := &domain.Attempt{RunID: id, StepID: "classify", ItemIndex: domain.NoItem, Attempt: n + 1, StepKey: "k", StartedAt: base, FinishedAt: base, DurationMS: 10, Outcome: o}
				if err := s.FinishAttempt(ctx, "o", a, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Transition(ctx, id, domain.Change{To: domain.StateSucceeded, Owner: "o", Actor: "seed"}); err != nil {
				t.Fatal(err)
			}
		}
		add("approved", false, domain.OutcomeNeedsReview, domain.OutcomeSucceeded)
		add("retried", false, domain.OutcomeFailed, domain.OutcomeSucceeded)
		add("dry", true, domain.OutcomeFailed, domain.OutcomeSucceeded)
		got, err := s.Stats(ctx, time.Now().Add(-2*time.Hour), "")
		if err != nil || len(got) != 1 {
			t.Fatalf("stats %+v %v", got, err)
		}
		p := got[0]
		if p.Runs != 2 || p.DryRuns != 1 || p.Succeeded != 2 || p.Attempts != 4 || p.Retries != 1 {
			t.Fatalf("pipeline: %+v", p.Stats)
		}
		st := p.Steps[0]
		if !reflect.DeepEqual(st.Outcomes, map[string]int{"needs_review": 1, "succeeded": 2, "failed": 1}) || st.Retries != 1 || math.Abs(st.SuccessRate-2.0/3) > 1e-9 {
			t.Fatalf("step: %+v", st)
		}
	})
}

// BenchmarkStats100k measures `pipectl stats` over 100,000 runs with three attempts each.
func BenchmarkStats100k(b *testing.B) {
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "ledger.db")+"?synchronous=normal")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UnixMilli()
	err = s.inTx(context.Background(), func(tx *sqlx.Tx) error {
		runStmt, err := tx.Prepare(`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at, finished_at) VALUES (?, ?, ?, 'h', '{}', 's', 'h', 'b', ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		attStmt, err := tx.Prepare(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at, duration_ms, outcome, pipeline) VALUES (?, ?, -1, ?, 'k', ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		for i := range 100_000 {
			id := fmt.Sprintf("r%06d", i)
			pipeline := []string{"billing", "triage", "reports"}[i%3]
			state, outcome := "succeeded", "succeeded"
			if i%50 == 0 {
				state, outcome = "failed_permanent", "failed"
			}
			created := now - int64(i)*500
			if _, err := runStmt.Exec(id, pipeline, id, state, created, created, created+int64(100+i%900)); err != nil {
				return err
			}
			for n, step := range []string{"fetch", "decide", "write"} {
				attempt := 1
				if n == 2 && i%10 == 0 {
					attempt = 2
				}
				if _, err := attStmt.Exec(id, step, attempt, created, created, int64(10+(i*7+n)%300), outcome, pipeline); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	since := time.UnixMilli(now - 100_000*500 - 1000)
	for b.Loop() {
		got, err := s.Stats(context.Background(), since, "")
		if err != nil || len(got) != 3 || got[0].Runs+got[1].Runs+got[2].Runs != 100_000 {
			b.Fatalf("%v %+v", err, got)
		}
	}
}
