package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/worker"
)

// fakeQueue hands out numbered runs and records how many each claim asked for.
type fakeQueue struct {
	mu      sync.Mutex
	left    int
	next    int
	asked   []int
	granted []int
}

func (q *fakeQueue) ClaimBatch(_ context.Context, owner string, _ time.Time, _ domain.ClaimFilter, n int) ([]*domain.Run, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.asked = append(q.asked, n)
	var out []*domain.Run
	for ; n > 0 && q.left > 0; n-- {
		q.next++
		q.left--
		out = append(out, &domain.Run{ID: fmt.Sprint("run-", q.next), State: domain.StateProcessing, LeaseOwner: owner})
	}
	q.granted = append(q.granted, len(out))
	return out, nil
}

func (q *fakeQueue) QueueDepth(context.Context) (int, error) { return 0, nil }
func (q *fakeQueue) PausedRuns(context.Context) (map[domain.RunState]int, error) {
	return nil, nil
}
func (q *fakeQueue) ExpireWaits(context.Context, string) (int, error) { return 0, nil }

// TestFetcherClaimsForFreeSlots: the first claim asks for every slot at once, no claim asks
// for more slots than are free, no more runs execute at once than there are slots, and every
// run is executed exactly once.
func TestFetcherClaimsForFreeSlots(t *testing.T) {
	const slots, runs = 8, 100
	q := &fakeQueue{left: runs}
	var mu sync.Mutex
	running, most := 0, 0
	seen := map[string]int{}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			mu.Lock()
			running++
			most = max(most, running)
			seen[r.ID]++
			finished := len(seen) == runs
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			if finished {
				close(done)
			}
			return nil
		}}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	// The poll interval is an hour: only full batches lead to the next claim without a wake-up.
	<-done
	cancel()
	<-served
	if most > slots {
		t.Fatalf("%d runs executed at once on %d slots", most, slots)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s executed %d times", id, n)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.asked[0] != slots {
		t.Fatalf("the first claim asked for %d runs, want all %d slots", q.asked[0], slots)
	}
	for _, n := range q.asked {
		if n < 1 || n > slots {
			t.Fatalf("a claim asked for %d runs with %d slots: %v", n, slots, q.asked)
		}
	}
	if len(q.asked) >= runs {
		t.Fatalf("%d claims for %d runs: no batching", len(q.asked), runs)
	}
}

// TestFetcherWaitsForWakeWhenDrained: after a claim that came back short, the fetcher claims
// again on a notification, not before.
func TestFetcherWaitsForWakeWhenDrained(t *testing.T) {
	q := &fakeQueue{left: 3}
	wake := make(chan struct{}, 1)
	ran := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 4, Poll: time.Hour, Wake: wake,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error { ran <- r.ID; return nil }}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	for range 3 {
		<-ran
	}
	q.mu.Lock()
	claims := len(q.asked)
	q.left = 2
	q.mu.Unlock()
	if claims != 1 {
		t.Fatalf("%d claims before any wake-up, want 1 (it came back short)", claims)
	}
	wake <- struct{}{}
	for range 2 {
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("the wake-up did not lead to a claim of the runs queued after the drain")
		}
	}
	cancel()
	<-served
	q.mu.Lock()
	defer q.mu.Unlock()
	// The slots report free one by one after their runs, so the wake-up may find only some
	// of them free: the runs queued after it may come in more than one claim.
	after := 0
	for _, n := range q.granted[1:] {
		after += n
	}
	if len(q.asked) < 2 || after != 2 {
		t.Fatalf("claims %v granted %v: the claims after the wake-up took %d runs, want 2", q.asked, q.granted, after)
	}
}

// blockingQueue's first claim waits until release is closed and then takes the one run it
// holds; entered is closed when that claim has started.
type blockingQueue struct {
	fakeQueue
	entered, release chan struct{}
	once             sync.Once
}

func (q *blockingQueue) ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error) {
	q.once.Do(func() { close(q.entered); <-q.release })
	return q.fakeQueue.ClaimBatch(ctx, owner, until, f, n)
}

// TestClaimInFlightAtStopIsRun: a worker told to stop while a claim is in flight still runs
// what that claim brings (its lease names this worker; no one else could take the run before
// the lease ran out), and Serve returns only after it ran. A caller that stops workers and
// starts others must therefore wait for Serve to return before it counts what the others run
// (see serveBatch in bench_test.go).
func TestClaimInFlightAtStopIsRun(t *testing.T) {
	q := &blockingQueue{fakeQueue: fakeQueue{left: 1}, entered: make(chan struct{}), release: make(chan struct{})}
	var ran []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 1, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error { ran = append(ran, r.ID); return nil }}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Hour); close(served) }()
	<-q.entered
	cancel()
	close(q.release)
	<-served
	if len(ran) != 1 || ran[0] != "run-1" {
		t.Fatalf("ran %v after a stop with a claim in flight, want [run-1]", ran)
	}
}
