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
	claimed, finished, err := s.ClaimFinishing(ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 4, 4, func(ctx context.Context, r *domain.Run) *domain.Finished {
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

// A claim may lock more runs than it may take for slots (most against n): it finishes what it
// can and claims the first n of the others, and leaves the rest queued, unlocked and untouched,
// for the next claim. An attack on the bound: every run but the pure ones would otherwise be
// claimed, to wait for a slot that the worker does not have.
func TestClaimFinishingTakesNoMoreThanNForSlots(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-x", "c-x", "d-s", "e-x", "f-x", "g-s", "h-s")
	var offered []string
	claimed, finished, err := s.ClaimFinishing(ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 7, finishAs(&offered))
	if err != nil {
		t.Fatal(err)
	}
	if len(offered) != 7 {
		t.Fatalf("offered %d runs, want the 7 it may lock", len(offered))
	}
	if len(finished) != 3 || finished[0].Run.ID != ids[0] || finished[1].Run.ID != ids[3] || finished[2].Run.ID != ids[6] {
		t.Fatalf("finished %d runs, want a, d and g", len(finished))
	}
	if len(claimed) != 2 || claimed[0].ID != ids[1] || claimed[1].ID != ids[2] {
		t.Fatalf("claimed %v, want b and c alone", claimed)
	}
	for _, i := range []int{4, 5, 7} {
		r, err := s.GetRun(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if r.State != domain.StateQueued || r.LeaseOwner != "" || eventsOf(t, s, ids[i]) != ">queued;" {
			t.Fatalf("run %d left: %s under %q, events %s", i, r.State, r.LeaseOwner, eventsOf(t, s, ids[i]))
		}
	}
	// Nothing of them stays locked: the next claim takes them at once, in their order.
	next, err := s.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 3 || next[0].ID != ids[4] || next[1].ID != ids[5] || next[2].ID != ids[7] {
		t.Fatalf("the next claim took %v, want e, f and h", next)
	}
}
