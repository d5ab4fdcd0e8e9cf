package ledger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// seedBacklog queues `big` runs of pipeline big, then `small` runs of pipeline small after
// them, in one statement each.
func seedBacklog(t *testing.T, s *Store, big, small int) {
	t.Helper()
	now := time.Now().UnixMilli() - 10_000_000
	for _, q := range []struct {
		sql   string
		count int
	}{
		{`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at)
		SELECT 'b-' || lpad(g::text, 7, '0'), 'big', 'k' || g, 'h', '{}', 's', 'sh', 't', 'queued', $1::bigint + g, $1::bigint + g FROM generate_series(1, $2::int) g`, big},
		{`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at)
		SELECT 's-' || lpad(g::text, 7, '0'), 'small', 'k' || g, 'h', '{}', 's', 'sh', 't', 'queued', $1::bigint + 5000000 + g, $1::bigint + g FROM generate_series(1, $2::int) g`, small},
	} {
		if _, err := s.db.Exec(q.sql, now, q.count); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClaimPastABacklogItMayNotTake: on PostgreSQL, a claim while a pipeline with 100,000 runs
// queued ahead of the others is switched off, or at its cap, reads the queues of the others
// (runs_queued_pipeline), not that backlog, whatever the planner's statistics say: the rows of
// runs it fetched, counted by the server, are a few hundred rather than 100,000. The pipeline
// also has 2,000 retries not yet due and 2,000 runs in flight, which the claim looks for among
// the due ones, and 200 pipelines have finished runs only. It then claims the other pipeline's
// oldest runs through ClaimBatch.
func TestClaimPastABacklogItMayNotTake(t *testing.T) {
	for _, c := range []struct {
		name string
		f    domain.ClaimFilter
		want int
	}{
		{"switched off", domain.ClaimFilter{}, 16},
		{"at its cap", domain.ClaimFilter{MaxPerPipeline: 3}, 3},
	} {
		for _, stats := range []string{"none", "analyzed", "stale"} {
			t.Run(c.name+"/stats="+stats, func(t *testing.T) {
				s := openOrFail(t, postgresOrSkip(t))
				ctx := context.Background()
				if _, err := s.db.Exec(`ALTER TABLE runs SET (autovacuum_enabled = false)`); err != nil {
					t.Fatal(err)
				}
				if stats == "stale" {
					// Statistics taken while the ledger held one pipeline only, all queued.
					seedBacklog(t, s, 1000, 0)
					if _, err := s.db.Exec(`ANALYZE runs`); err != nil {
						t.Fatal(err)
					}
					if _, err := s.db.Exec(`DELETE FROM runs`); err != nil {
						t.Fatal(err)
					}
					seedBacklog(t, s, 100_000, 100)
				} else {
					seedBacklog(t, s, 100_000, 100)
				}
				// What the retries' and leases' reads might walk the backlog to find, and
				// pipelines with finished runs only.
				if _, err := s.db.Exec(`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, lease_owner, lease_expires_at, next_attempt_at, created_at, updated_at, finished_at)
					SELECT 'x-' || g, CASE WHEN g <= 4000 THEN 'big' ELSE 'old-' || g END, 'x' || g, 'h', '{}', 's', 'sh', 't',
						CASE WHEN g <= 2000 THEN 'failed_transient' WHEN g <= 4000 THEN 'processing' ELSE 'succeeded' END,
						CASE WHEN g BETWEEN 2001 AND 4000 THEN 'busy' ELSE '' END,
						CASE WHEN g BETWEEN 2001 AND 4000 THEN 9999999999999 ELSE 0 END,
						CASE WHEN g <= 2000 THEN 9999999999999 ELSE 0 END, g, g, CASE WHEN g > 4000 THEN g + 1 ELSE 0 END
					FROM generate_series(1, 4200) g`); err != nil {
					t.Fatal(err)
				}
				if stats == "analyzed" {
					if _, err := s.db.Exec(`ANALYZE runs`); err != nil {
						t.Fatal(err)
					}
				}
				if c.f.MaxPerPipeline == 0 {
					if err := s.SetPipelineDisabled(ctx, "big", true, "test", "ops"); err != nil {
						t.Fatal(err)
					}
				} else if _, err := s.db.Exec(`UPDATE runs SET state = 'processing', lease_owner = 'busy', lease_expires_at = 9999999999999 WHERE id IN ('b-0000001', 'b-0000002', 'b-0000003')`); err != nil {
					t.Fatal(err)
				}
				if got := s.switchedOff(ctx); got != (c.f.MaxPerPipeline == 0) {
					t.Fatalf("switchedOff() = %v", got)
				}
				// The claim as ClaimBatch makes it, in a transaction rolled back, with the rows
				// of runs it fetched counted by the server for that transaction: the one
				// statement (by pipeline) when no cap is set, the capped transaction's read
				// otherwise.
				db := s.db
				if c.f.MaxPerPipeline == 0 {
					db = s.claims
				}
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback()
				var ids []string
				if c.f.MaxPerPipeline == 0 {
					ids = claimInTx(t, tx, s.now(), c.f, 16, claimWindow(16))
				} else {
					cands, err := s.claimCandidates(ctx, tx, s.now(), c.f, 16)
					if err != nil {
						t.Fatal(err)
					}
					for _, x := range cands {
						ids = append(ids, x.ID)
					}
				}
				var fetched int
				if err := tx.GetContext(ctx, &fetched, `SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM pg_stat_xact_user_tables WHERE relid = 'runs'::regclass`); err != nil {
					t.Fatal(err)
				}
				// A capped claim also counts the runs in flight to find the pipelines at their
				// cap: the 2,003 here.
				most := 1000
				if c.f.MaxPerPipeline > 0 {
					most += 2003
				}
				if len(ids) != 16 || ids[0] != "s-0000001" || ids[15] != "s-0000016" || fetched > most {
					t.Fatalf("%d runs (%v) after fetching %d rows of runs, want small's 16 oldest past a backlog of 100,000", len(ids), ids, fetched)
				}
				t.Logf("16 runs for %d rows of runs fetched", fetched)
				tx.Rollback()
				runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), c.f, 16)
				if err != nil || len(runs) != c.want || runs[0].ID != "s-0000001" {
					t.Fatalf("claimed %d runs (%v), want small's %d oldest", len(runs), err, c.want)
				}
			})
		}
	}
}

// TestClaimPastABacklogWithClaimersAtOnce: twelve claimers take runs of one pipeline while
// another's backlog ahead of it is switched off. Each run is claimed once, all are claimed,
// and no claim comes back empty or short while half the queue is left: a claim that finds the
// runs it read held or taken by other claims reads a wider window (claimStatement, up to four
// rounds; with two it failed here once in ten or fifteen tries under the race detector), and
// never holds runs it does not take.
func TestClaimPastABacklogWithClaimersAtOnce(t *testing.T) {
	dsn := postgresOrSkip(t)
	s := openOrFail(t, dsn)
	ctx := context.Background()
	const small, n, claimers = 3000, 16, 12
	seedBacklog(t, s, 10_000, small)
	if err := s.SetPipelineDisabled(ctx, "big", true, "test", "ops"); err != nil {
		t.Fatal(err)
	}
	var claimed sync.Map
	var taken, emptyEarly, shortEarly, short atomic.Int64
	var wg sync.WaitGroup
	for w := range claimers {
		store := openOrFail(t, dsn) // a worker process of its own
		wg.Go(func() {
			for {
				left := small - taken.Load()
				runs, err := store.ClaimBatch(ctx, fmt.Sprint("w", w), time.Now().Add(time.Minute), domain.ClaimFilter{}, n)
				if err != nil {
					t.Error(err)
					return
				}
				// Half the queue must have been left both when the claim began and when it came
				// back: on a machine busy with other tests, a claim slowed down for seconds saw
				// the others drain the queue meanwhile (once, in the whole suite).
				left = min(left, small-taken.Load())
				if len(runs) == 0 {
					if left >= small/2 {
						emptyEarly.Add(1)
					}
					if taken.Load() >= small {
						return
					}
					continue
				}
				if len(runs) < n {
					short.Add(1)
					if left >= small/2 {
						shortEarly.Add(1)
					}
				}
				for _, r := range runs {
					if r.Pipeline != "small" {
						t.Errorf("claimed %s of %s, which is switched off", r.ID, r.Pipeline)
					}
					if prev, dup := claimed.LoadOrStore(r.ID, w); dup {
						t.Errorf("%s claimed by w%d and w%d", r.ID, prev, w)
					}
				}
				taken.Add(int64(len(runs)))
			}
		})
	}
	wg.Wait()
	if got := taken.Load(); got != small {
		t.Fatalf("%d runs claimed, want %d", got, small)
	}
	if emptyEarly.Load() > 0 || shortEarly.Load() > 0 {
		t.Fatalf("%d claims came back empty and %d short with half the queue or more left", emptyEarly.Load(), shortEarly.Load())
	}
	t.Logf("%d claims came back short", short.Load())
}

// TestSwitchedOffCountReadsTheirQueuesOnly: what chooses a claim's path, asked every second by
// every worker, reads the queues of the pipelines switched off, the names of the others and the
// due retries, not the whole queue (written as `pipeline IN (...)` it read all 100,000 queued
// runs, 21-28 ms).
func TestSwitchedOffCountReadsTheirQueuesOnly(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	seedBacklog(t, s, 100_000, 100)
	if err := s.SetPipelineDisabled(ctx, "small", true, "test", "ops"); err != nil {
		t.Fatal(err)
	}
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			if _, err := s.db.Exec(`ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		tx, err := s.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var w switchedOffWeights
		var fetched int
		if err := tx.GetContext(ctx, &w, switchedOffSQL, 4*switchedOffBacklog, maxOpenPipelines+1, ms(s.now())); err != nil {
			t.Fatal(err)
		}
		if err := tx.GetContext(ctx, &fetched, `SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM pg_stat_xact_user_tables WHERE relid = 'runs'::regclass`); err != nil {
			t.Fatal(err)
		}
		tx.Rollback()
		if w != (switchedOffWeights{Backlog: 100, Open: 1}) || fetched > 1000 {
			t.Fatalf("analyzed=%v: %+v (want 100 switched off, 1 open) for %d rows of runs fetched", analyzed, w, fetched)
		}
	}
	if s.switchedOff(ctx) {
		t.Fatal("100 queued runs switched off made the claim read by pipeline")
	}
}

// TestReadByPipelineWhenItCostsLess: an unfiltered claim reads by pipeline only past a
// backlog, and only while the pipelines it would read, and the retries due it would sort, cost
// less than the walk (a review found reads of 100,000 rows a claim with 1,000 open pipelines,
// and of 50,000 with as many retries due).
func TestReadByPipelineWhenItCostsLess(t *testing.T) {
	for _, c := range []struct {
		w    switchedOffWeights
		want bool
	}{
		{switchedOffWeights{Backlog: 100_000, Open: 1}, true},
		{switchedOffWeights{Backlog: 10_000, Open: 3, Retries: 100}, true},
		{switchedOffWeights{Backlog: 4_999, Open: 1}, false},
		{switchedOffWeights{Backlog: 20_000, Open: maxOpenPipelines + 1}, false},
		{switchedOffWeights{Backlog: 20_000, Open: 60}, false}, // 60 windows of 192 runs: 11,520
		{switchedOffWeights{Backlog: 10_000, Open: 1, Retries: 20_000}, false},
		{switchedOffWeights{Backlog: 20_000, Open: 0}, true},
	} {
		if got := c.w.readByPipeline(); got != c.want {
			t.Errorf("%+v: readByPipeline() = %v, want %v", c.w, got, c.want)
		}
	}
}

// TestWindowedClaimSaysHowFarItRead: a claim that reads a window of each pipeline's queue says
// how many due runs the window held, even when it took none (the rows other claims hold), so
// that claimStatement reads a wider window only when the window was full: an idle worker's
// claim, or one at the end of a queue, is one statement.
func TestWindowedClaimSaysHowFarItRead(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	seedQueued(t, s, 300) // q0000000..q0000299
	until := time.Now().Add(time.Minute)
	held, err := s.db.BeginTxx(ctx, nil) // another claim, holding the 200 oldest
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	if _, err := held.Exec(`SELECT id FROM runs WHERE id < 'q0000200' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	check := func(window, wantSeen int, wantFirst string, wantN int) {
		t.Helper()
		runs, seen, err := s.claimOnce(ctx, "w", until, domain.ClaimFilter{}, 16, window)
		if err != nil || seen != wantSeen || len(runs) != wantN || wantN > 0 && runs[0].ID != wantFirst {
			first := ""
			if len(runs) > 0 {
				first = runs[0].ID
			}
			t.Fatalf("window %d: %d runs from %q, %d due read (%v); want %d from %q, %d read", window, len(runs), first, seen, err, wantN, wantFirst, wantSeen)
		}
		for _, r := range runs {
			if r.ID == "" || r.State != domain.StateProcessing || r.LeaseOwner != "w" {
				t.Fatalf("window %d claimed %+v", window, r)
			}
		}
	}
	check(128, 128, "", 0)           // full of held runs: nothing taken, read on
	check(512, 300, "q0000200", 16)  // every due run fit: stop
	held.Rollback()                  // the other claim let go
	check(1024, 284, "q0000000", 16) // the 16 taken are no longer due
	if _, err := s.db.Exec(`UPDATE runs SET state = 'succeeded'`); err != nil {
		t.Fatal(err)
	}
	check(128, 0, "", 0) // an empty queue: one row of zeros, no run
}
