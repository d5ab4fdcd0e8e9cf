package worker_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/worker"
)

// finishingQueue is a fakeQueue whose claims offer each run to finish first, as
// ledger.ClaimFinishing does: a claim takes n runs at a time, and the next n only once it
// finished every run so far, up to most; the runs it does not finish (all of its last n) are
// claimed. It records how many claims were in flight at once, what each was for, and the most
// runs a claim finished.
type finishingQueue struct {
	*fakeQueue
	inflight, most atomic.Int32
	books          sync.Mutex // the fields below
	forSlots       []int
	biggest        int
}

func (q *finishingQueue) ClaimFinishing(ctx, stop context.Context, owner string, until time.Time, f domain.ClaimFilter, n, most int,
	finish func(context.Context, *domain.Run) *domain.Finished) ([]*domain.Run, []*domain.Finished, bool, error) {
	now := q.inflight.Add(1)
	defer q.inflight.Add(-1)
	for m := q.most.Load(); now > m && !q.most.CompareAndSwap(m, now); m = q.most.Load() {
	}
	var claimed []*domain.Run
	var finished []*domain.Finished
	full := false
	for took := 0; took < most && len(claimed) == 0 && stop.Err() == nil; {
		ask := min(n, most-took)
		runs, err := q.ClaimBatch(ctx, owner, until, f, ask)
		if err != nil {
			return nil, nil, false, err
		}
		took += len(runs)
		full = len(runs) == ask
		for _, r := range runs {
			var done *domain.Finished
			if stop.Err() == nil {
				done = finish(stop, r)
			}
			if done != nil {
				finished = append(finished, done)
				continue
			}
			claimed = append(claimed, r)
		}
		if !full {
			break
		}
	}
	q.books.Lock()
	defer q.books.Unlock()
	q.forSlots = append(q.forSlots, n)
	q.biggest = max(q.biggest, len(finished))
	return claimed, finished, full, nil
}

// TestWorkerFinishesRunsInItsClaims: the runs a claim finishes are told of once each (after the
// claim returned, as its commit), never given to a slot, and the rest run in the slots. While
// claims finish every run they take, two of them are in flight at once (one runs its runs while
// the other waits for the ledger), and they take more runs than there are slots (no slot is
// used for them); the worker never asks a claim for more runs for slots than it has.
func TestWorkerFinishesRunsInItsClaims(t *testing.T) {
	const total, slots = 400, 8
	q := &finishingQueue{fakeQueue: &fakeQueue{left: total, latency: time.Millisecond}}
	var mu sync.Mutex
	told := map[string]int{}
	ran := map[string]int{}
	done := make(chan struct{})
	var once sync.Once
	check := func() {
		if len(told)+len(ran) == total {
			once.Do(func() { close(done) })
		}
	}
	w := &worker.Worker{
		Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: 10 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			mu.Lock()
			defer mu.Unlock()
			ran[r.ID]++
			check()
			return nil
		},
		// All but run-50, run-150, run-250 and run-350 are pure.
		Finish: func(_ context.Context, r *domain.Run) *domain.Finished {
			if strings.HasSuffix(r.ID, "0") && strings.HasSuffix(strings.TrimSuffix(r.ID, "0"), "5") {
				return nil
			}
			time.Sleep(100 * time.Microsecond)
			return &domain.Finished{Run: r, Committed: func() {
				mu.Lock()
				defer mu.Unlock()
				told[r.ID]++
				check()
			}}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(stopped) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the runs were not all finished or run")
	}
	cancel()
	<-stopped
	mu.Lock()
	defer mu.Unlock()
	for id, n := range told {
		if n != 1 || ran[id] != 0 {
			t.Fatalf("%s told %d times, run %d times", id, n, ran[id])
		}
	}
	for id, n := range ran {
		if n != 1 {
			t.Fatalf("%s ran %d times", id, n)
		}
	}
	if len(ran) != total/100 {
		t.Fatalf("%d runs went to a slot, want %d", len(ran), total/100)
	}
	if q.most.Load() != 2 {
		t.Fatalf("at most %d claims were in flight at once, want 2", q.most.Load())
	}
	q.books.Lock()
	defer q.books.Unlock()
	for _, n := range q.forSlots {
		if n > slots {
			t.Fatalf("a claim was for %d runs with %d slots: %v", n, slots, q.forSlots)
		}
	}
	if q.biggest <= slots {
		t.Fatalf("the claims finished at most %d runs each, with %d slots: they take no more than there are slots", q.biggest, slots)
	}
}
