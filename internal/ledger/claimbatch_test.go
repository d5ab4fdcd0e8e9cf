package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// queueRuns creates n queued runs of pipeline that all share one creation millisecond, so that
// only their ids order them; it returns them in claim order.
func queueRuns(t *testing.T, s *Store, pipeline string, n int, createdAt int64) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		// Ids that sort against insertion order: the claim must order by id, not by arrival.
		r := newRun(t, pipeline, fmt.Sprintf("%s-%02d", pipeline, n-i))
		r.ID = fmt.Sprintf("%s-%02d", pipeline, n-i)
		if _, _, err := s.CreateRun(context.Background(), r, "t", nil); err != nil {
			t.Fatal(err)
		}
		ids[n-1-i] = r.ID
	}
	if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET created_at = ? WHERE pipeline = ?`), createdAt, pipeline); err != nil {
		t.Fatal(err)
	}
	return ids
}

func runIDs(runs []*domain.Run) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.ID
	}
	return out
}

func TestClaimBatchOrderAndEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		older := queueRuns(t, s, "older", 3, 1000)
		newer := queueRuns(t, s, "newer", 4, 2000)
		want := append(append([]string{}, older...), newer...)
		until := time.Now().Add(time.Minute)
		first, err := s.ClaimBatch(ctx, "w1", until, domain.ClaimFilter{}, 5)
		if err != nil {
			t.Fatal(err)
		}
		if got := runIDs(first); strings.Join(got, " ") != strings.Join(want[:5], " ") {
			t.Fatalf("first batch %v, want %v (created_at, then id)", got, want[:5])
		}
		for _, r := range first {
			if r.State != domain.StateProcessing || r.LeaseOwner != "w1" || r.LeaseExpires.UnixMilli() != until.UnixMilli() || !r.Unstarted {
				t.Fatalf("claimed run %+v", r)
			}
			events, _ := s.Events(ctx, r.ID)
			if last := events[len(events)-1]; len(events) != 2 || last.From != domain.StateQueued || last.To != domain.StateProcessing || last.Reason != "claimed by w1" || last.Actor != "w1" {
				t.Fatalf("events of %s: %+v", r.ID, events)
			}
		}
		rest, err := s.ClaimBatch(ctx, "w2", until, domain.ClaimFilter{}, 10)
		if err != nil || strings.Join(runIDs(rest), " ") != strings.Join(want[5:], " ") {
			t.Fatalf("second batch %v %v, want %v", runIDs(rest), err, want[5:])
		}
		if none, err := s.ClaimBatch(ctx, "w2", until, domain.ClaimFilter{}, 10); err != nil || len(none) != 0 {
			t.Fatalf("an empty queue gave %v %v", runIDs(none), err)
		}
	})
}

func TestClaimBatchKillSwitchFilterAndDue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		off := queueRuns(t, s, "off", 2, 1000)
		on := queueRuns(t, s, "on", 2, 2000)
		later := queueRuns(t, s, "later", 2, 3000)
		if err := s.SetPipelineDisabled(ctx, "off", true, "maintenance", "ops"); err != nil {
			t.Fatal(err)
		}
		// A retry that is due is claimed (and has a history); one that is not due yet is not.
		if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET state = 'failed_transient', next_attempt_at = ? WHERE id = ?`), time.Now().Add(-time.Second).UnixMilli(), later[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET state = 'failed_transient', next_attempt_at = ? WHERE id = ?`), time.Now().Add(time.Hour).UnixMilli(), later[1]); err != nil {
			t.Fatal(err)
		}
		att := &domain.Attempt{RunID: later[0], StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeFailed}
		if err := s.FinishAttempt(ctx, "", att, nil); err != nil {
			t.Fatal(err)
		}
		got, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{"off", "later"}}, 10)
		if err != nil || strings.Join(runIDs(got), " ") != later[0] {
			t.Fatalf("filtered claim %v %v, want only the due retry %s", runIDs(got), err, later[0])
		}
		if got[0].Unstarted {
			t.Fatal("a run with an attempt was claimed as unstarted")
		}
		if events, _ := s.Events(ctx, later[0]); events[len(events)-1].From != domain.StateFailedTransient {
			t.Fatalf("claim event %+v", events[len(events)-1])
		}
		got, err = s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{}, 10)
		if err != nil || strings.Join(runIDs(got), " ") != strings.Join(on, " ") {
			t.Fatalf("claim %v %v, want %v and nothing of the disabled %v", runIDs(got), err, on, off)
		}
	})
}

func TestClaimBatchTakesOverExpiredLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		ids := queueRuns(t, s, "p", 3, 1000)
		if _, err := s.ClaimBatch(ctx, "dead", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids[:2] {
			att := &domain.Attempt{RunID: id, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k-" + id, StartedAt: time.Now(), Outcome: domain.OutcomeRunning}
			if err := s.StartAttempt(ctx, "dead", att); err != nil {
				t.Fatal(err)
			}
		}
		// The first lease expired; the second is alive.
		if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET lease_expires_at = 2 WHERE id = ?`), ids[0]); err != nil {
			t.Fatal(err)
		}
		got, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{}, 10)
		if err != nil || strings.Join(runIDs(got), " ") != ids[0]+" "+ids[2] {
			t.Fatalf("claim %v %v, want the expired %s and the queued %s", runIDs(got), err, ids[0], ids[2])
		}
		if got[0].LeaseOwner != "w" || got[0].State != domain.StateProcessing || got[0].Unstarted {
			t.Fatalf("taken over %+v", got[0])
		}
		events, _ := s.Events(ctx, ids[0])
		last := events[len(events)-1]
		if last.From != domain.StateProcessing || last.To != domain.StateProcessing || last.Reason != "taken over from dead (lease expired) by w" || last.Actor != "w" {
			t.Fatalf("takeover event %+v", last)
		}
		for i, id := range ids[:2] {
			atts, _ := s.Attempts(ctx, id)
			want := domain.OutcomeRunning
			if i == 0 {
				want = "abandoned"
			}
			if len(atts) != 1 || atts[0].Outcome != want || (i == 0 && !strings.Contains(atts[0].Error, "(dead)")) {
				t.Fatalf("attempts of %s: %+v, want %s", id, atts, want)
			}
		}
	})
}

// TestClaimBatchCapsAcrossWorkers has two stores on one ledger (as two worker processes
// have) claim batches of a capped pipeline at once, finishing what they claimed: the runs of
// the pipeline in processing never exceed the cap, and every run is claimed exactly once.
func TestClaimBatchCapsAcrossWorkers(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) (*Store, *Store){
		"sqlite": func(t *testing.T) (*Store, *Store) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			return openOrFail(t, dsn), openOrFail(t, dsn)
		},
		"postgres": func(t *testing.T) (*Store, *Store) {
			dsn := postgresOrSkip(t)
			return openOrFail(t, dsn), openOrFail(t, dsn)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, b := open(t)
			ctx := context.Background()
			const capped, limit = 24, 3
			queueRuns(t, a, "capped", capped, 1000)
			queueRuns(t, a, "free", 6, 1000)
			f := domain.ClaimFilter{MaxPerPipeline: limit}
			var mu sync.Mutex
			seen := map[string]int{}
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for w, s := range []*Store{a, b} {
				owner := fmt.Sprint("w", w)
				wg.Go(func() {
					for idle := 0; idle < 3; {
						got, err := s.ClaimBatch(ctx, owner, time.Now().Add(time.Minute), f, 8)
						if err != nil {
							errs <- err
							return
						}
						var busy int
						if err := s.db.Get(&busy, `SELECT COUNT(*) FROM runs WHERE pipeline = 'capped' AND state = 'processing'`); err != nil {
							errs <- err
							return
						}
						if busy > limit {
							errs <- fmt.Errorf("%d runs of the capped pipeline in processing, cap %d", busy, limit)
							return
						}
						if len(got) == 0 {
							idle++
							continue
						}
						idle = 0
						for _, r := range got {
							mu.Lock()
							seen[r.ID]++
							mu.Unlock()
							if err := s.Transition(ctx, r.ID, domain.Change{To: domain.StateSucceeded, Owner: owner, Actor: owner}); err != nil {
								errs <- err
								return
							}
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if len(seen) != capped+6 {
				t.Fatalf("%d runs claimed, want %d", len(seen), capped+6)
			}
			for id, n := range seen {
				if n != 1 {
					t.Fatalf("run %s claimed %d times", id, n)
				}
			}
		})
	}
}

func openOrFail(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func postgresOrSkip(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	return PostgresTestSchema(t, dsn)
}

// TestClaimBatchConcurrentClaimersShareNothing has three stores on one PostgreSQL ledger (three
// worker processes) claim batches of an uncapped queue at once, as the one-statement claim
// does: every run is claimed by exactly one of them, and each has one claim event.
func TestClaimBatchConcurrentClaimersShareNothing(t *testing.T) {
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set: SQLite serialises claims with its write lock")
	}
	dsn = PostgresTestSchema(t, dsn)
	stores := []*Store{openOrFail(t, dsn), openOrFail(t, dsn), openOrFail(t, dsn)}
	ctx := context.Background()
	ids := queueRuns(t, stores[0], "p", 90, 1000)
	claimed := make([][]string, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			owner := fmt.Sprintf("w%d", i)
			for {
				got, err := s.ClaimBatch(ctx, owner, time.Now().Add(time.Minute), domain.ClaimFilter{}, 1+i*3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				for _, r := range got {
					if r.LeaseOwner != owner || r.State != domain.StateProcessing || !r.Unstarted {
						t.Errorf("claimed %+v", r)
					}
					claimed[i] = append(claimed[i], r.ID)
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for _, c := range claimed {
		for _, id := range c {
			seen[id]++
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("run %s claimed %d times (claims: %v)", id, seen[id], claimed)
		}
		events, _ := stores[0].Events(ctx, id)
		n := 0
		for _, e := range events {
			if e.To == domain.StateProcessing {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("run %s has %d claim events", id, n)
		}
	}
	if len(seen) != len(ids) {
		t.Fatalf("%d runs claimed, %d queued", len(seen), len(ids))
	}
}
