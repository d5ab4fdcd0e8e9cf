package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// A claim that finishes runs holds its row locks while it executes them (up to a quarter of the
// lease), so it must lock only the runs it takes. Reading the ready runs and the expired leases
// in two branches of n each, and keeping n, held the rest of the other branch locked, unclaimed,
// for the whole claim (found by a review): here a worker of pipeline p found p's last run locked
// by a claim that did not take it.
func TestClaimFinishingLocksOnlyWhatItTakes(t *testing.T) {
	dsn := postgresOrSkip(t)
	s, other := openOrFail(t, dsn), openOrFail(t, dsn)
	ctx := context.Background()
	ready := queueKeyed(t, s, "a1-s", "a2-s", "a3-s") // pipeline p
	for _, k := range []string{"b1", "b2"} {
		if _, _, err := s.CreateRun(ctx, newRun(t, "b", k), "test", nil); err != nil {
			t.Fatal(err)
		}
	}
	// b's runs were claimed by a worker that died: their leases ran out.
	if _, err := s.db.Exec(`UPDATE runs SET state = 'processing', lease_owner = 'dead', lease_expires_at = 1 WHERE pipeline = 'b'`); err != nil {
		t.Fatal(err)
	}
	var offered []string
	finish := finishAs(&offered)
	var tookA, tookB []*domain.Run
	asked := false
	claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 4, 4, func(ctx context.Context, r *domain.Run) *domain.Finished {
		if !asked {
			asked = true
			var err error
			if tookA, err = other.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{"p"}}, 10); err != nil {
				t.Error(err)
			}
			if tookB, err = other.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{"b"}}, 10); err != nil {
				t.Error(err)
			}
		}
		return finish(ctx, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The expired leases come first, then the ready runs for what is left: b1, b2, then p's
	// first two.
	if len(claimed) != 2 || claimed[0].Pipeline != "b" || claimed[1].Pipeline != "b" || len(finished) != 2 ||
		finished[0].Run.ID != ready[0] || finished[1].Run.ID != ready[1] {
		t.Fatalf("claimed %v, finished %d", claimed, len(finished))
	}
	if len(tookA) != 1 || tookA[0].ID != ready[2] || len(tookB) != 0 {
		t.Fatalf("while the claim executed its runs, a worker of p took %v and one of b took %v: want %s alone", tookA, tookB, ready[2])
	}
}

// A claim may take more runs than it may take for slots (most against n): it locks n at a time,
// and the next n, after them, only once it finished every run it locked so far. So the runs it
// claims for slots all come from its last lock (never more than n), and no run is locked by it
// that it does not take.
func TestClaimFinishingLocksNAtATime(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-s", "c-s", "d-s", "e-x", "f-x", "g-s")
	var offered []string
	claimed, finished, full, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 6, finishAs(&offered))
	if err != nil {
		t.Fatal(err)
	}
	if len(finished) != 4 || finished[0].Run.ID != ids[0] || finished[3].Run.ID != ids[3] {
		t.Fatalf("finished %d runs, want a to d", len(finished))
	}
	if len(claimed) != 2 || claimed[0].ID != ids[4] || claimed[1].ID != ids[5] || !full {
		t.Fatalf("claimed %v (full %v), want e and f from a full last lock", claimed, full)
	}
	if r, err := s.GetRun(ctx, ids[6]); err != nil || r.State != domain.StateQueued || eventsOf(t, s, ids[6]) != ">queued;" {
		t.Fatalf("g, past the claim's last lock: %+v %v", r, err)
	}
	// A claim that finished all it found says whether its last lock was full.
	queueKeyed(t, s, "h-s")
	_, finished, full, err = s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 6, finishAs(&offered))
	if err != nil || len(finished) != 2 || full {
		t.Fatalf("the last two runs: finished %d, full %v, %v", len(finished), full, err)
	}
}

// While a claim executes the runs it locked, the runs after them are free for any other claim:
// locking more than it would take held them for the whole claim, and another worker with free
// slots found nothing (found by a review, with the claim that locked most runs at once).
func TestClaimFinishingHoldsNoRunItDoesNotTake(t *testing.T) {
	dsn := postgresOrSkip(t)
	s, other := openOrFail(t, dsn), openOrFail(t, dsn)
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-x", "c-x", "d-x")
	var offered []string
	finish := finishAs(&offered)
	var took []*domain.Run
	asked := false
	claimed, finished, full, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 4, func(ctx context.Context, r *domain.Run) *domain.Finished {
		if !asked {
			asked = true
			var err error
			if took, err = other.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 10); err != nil {
				t.Error(err)
			}
		}
		return finish(ctx, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(took) != 3 || took[0].ID != ids[1] {
		t.Fatalf("while w1's claim executed its first run, w2 took %d runs, want b, c and d", len(took))
	}
	if len(finished) != 1 || len(claimed) != 0 || full {
		t.Fatalf("w1 finished %d, claimed %v, full %v: want a alone, and an empty last lock", len(finished), claimed, full)
	}
}

// A run that its claim's budget stops is claimed, to run in a slot: it never holds a claim
// again. With runs that are not pure ahead of it, a claim that left the rest of its lock
// queued executed it again and again, each time for the whole budget (found by a review).
func TestClaimFinishingRunsASlowRunOnce(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	ids := queueKeyed(t, s, "x1-x", "x2-x", "slow-s")
	execs := 0
	slow := func(ctx context.Context, r *domain.Run) *domain.Finished {
		if r.IdempotencyKey != "slow-s" {
			return nil
		}
		execs++
		<-ctx.Done() // longer than the budget
		return nil
	}
	for range 4 {
		if _, _, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(2*time.Second), domain.ClaimFilter{}, 1, 8, slow); err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.GetRun(ctx, ids[2])
	if err != nil {
		t.Fatal(err)
	}
	if execs != 1 || r.State != domain.StateProcessing || r.LeaseOwner != "w1" {
		t.Fatalf("the slow run was executed %d times and is %s under %q: want once, then claimed", execs, r.State, r.LeaseOwner)
	}
}

// Once the worker is told to stop, the claim locks no more runs: a stop that came as the last
// run of a lock finished had the next lock take n runs, claim them unstarted, and the worker
// hand them back, so that they ran in slots after their lease instead of in a claim (found by a
// review).
func TestClaimFinishingLocksNoMoreAfterAStop(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-s", "c-s", "d-s", "e-s", "f-s")
	stop, stopNow := context.WithCancel(ctx)
	var offered []string
	inner := finishAs(&offered)
	finish := func(ctx context.Context, r *domain.Run) *domain.Finished {
		f := inner(ctx, r)
		if len(offered) == 4 {
			stopNow() // SIGTERM as the last run of the second lock ends
		}
		return f
	}
	claimed, finished, _, err := s.ClaimFinishing(ctx, stop, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 8, finish)
	if err != nil {
		t.Fatal(err)
	}
	if len(finished) != 4 || len(claimed) != 0 {
		t.Fatalf("finished %d and claimed %d: after the stop the claim locked more runs", len(finished), len(claimed))
	}
	for _, id := range ids[4:] {
		if r, err := s.GetRun(ctx, id); err != nil || r.State != domain.StateQueued {
			t.Fatalf("%s after the stop: %+v %v", id, r, err)
		}
	}
}

// The runs a claim locks after its first lock were queued before it began: one queued while it
// ran its first runs would have a claim event dated before the run was queued (found by a
// review). The next claim takes them.
func TestClaimFinishingTakesNoRunQueuedAfterItBegan(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	queueKeyed(t, s, "a-s")
	var offered, late []string
	inner := finishAs(&offered)
	_, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 4, func(ctx context.Context, r *domain.Run) *domain.Finished {
		if len(offered) == 0 {
			time.Sleep(20 * time.Millisecond)
			late = queueKeyed(t, s, "b-s", "c-x")
		}
		return inner(ctx, r)
	})
	if err != nil || len(finished) != 1 {
		t.Fatalf("finished %d: %v", len(finished), err)
	}
	for _, id := range late {
		if evs := eventsOf(t, s, id); evs != ">queued;" {
			t.Fatalf("%s, queued during the claim: %s", id, evs)
		}
	}
	next, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 4, inner)
	if err != nil || len(finished) != 1 || len(next) != 1 || next[0].ID != late[1] {
		t.Fatalf("the next claim finished %d and claimed %v: %v", len(finished), next, err)
	}
}

// A claim's later locks take no run whose lease ran out: one handed back after the claim began
// would be taken over at the claim's time, before its hand-back, so that its events went back in
// time (found by a review). The next claim takes it over.
func TestClaimFinishingTakesNoLeaseOverInALaterLock(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	h := queueKeyed(t, s, "h-x")[0]
	if got, err := s.ClaimBatch(ctx, "w0", time.Now().Add(time.Hour), domain.ClaimFilter{}, 1); err != nil || len(got) != 1 {
		t.Fatalf("claim of h: %v %v", got, err)
	}
	queueKeyed(t, s, "a-s", "b-s")
	var offered []string
	inner := finishAs(&offered)
	fin := func(ctx context.Context, r *domain.Run) *domain.Finished {
		if len(offered) == 0 {
			time.Sleep(5 * time.Millisecond)
			if err := s.HandBack(ctx, h, "w0", "handed back by w0, which is stopping"); err != nil {
				t.Fatal(err)
			}
		}
		return inner(ctx, r)
	}
	claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 4, fin)
	if err != nil || len(claimed) != 0 || len(finished) != 2 {
		t.Fatalf("claimed %v, finished %d: %v (want a and b finished, h left)", claimed, len(finished), err)
	}
	r, err := s.GetRun(ctx, h)
	if err != nil || r.LeaseOwner != "w0" {
		t.Fatalf("h after the claim: %+v %v", r, err)
	}
	claimed, _, _, err = s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 4, inner)
	if err != nil || len(claimed) != 1 || claimed[0].ID != h {
		t.Fatalf("the next claim took %v: %v", claimed, err)
	}
}
