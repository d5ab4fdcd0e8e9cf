package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/worker"
)

// TestFinishingClaimsLeaveNoDueRunToThePoll: a worker whose claims finish every run they take
// meets a queue where pure runs and runs of 100 ms that are not pure come mixed. Its claims take
// the latter for its free slots and hold no other run locked, so every one of them starts as soon
// as a slot is free. With claims that locked more runs than they took, the runs left behind were
// skipped by the claim in flight, which came back short, and waited for the poll (5 s here;
// found by a review). That depends on how the two claims in flight meet, so this test caught it
// in some runs only; TestClaimFinishingHoldsNoRunItDoesNotTake (ledger) is the one that always
// does.
func TestFinishingClaimsLeaveNoDueRunToThePoll(t *testing.T) {
	store := postgresQueue(t)
	var mu sync.Mutex
	told, started := 0, map[string]time.Time{}
	wake := make(chan struct{}, 1)
	w := &worker.Worker{
		Queue: store, Owner: "w", LeaseTTL: 30 * time.Second, Concurrency: 4, Poll: 5 * time.Second, Wake: wake,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			mu.Lock()
			started[r.IdempotencyKey] = time.Now()
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			return store.Transition(ctx, r.ID, domain.Change{To: domain.StateSucceeded, Reason: "done", Actor: "w", Owner: "w"})
		},
		Finish: func(ctx context.Context, r *domain.Run) *domain.Finished {
			if !strings.HasSuffix(r.IdempotencyKey, "-s") {
				return nil
			}
			f := succeededInClaim(r)
			f.Committed = func() { mu.Lock(); told++; mu.Unlock() }
			return f
		},
	}
	// Pure runs first, so that the worker's claims finish every run they take.
	queueKeys(t, store, "a0-s", "a1-s", "a2-s", "a3-s")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(done) }()
	defer func() { stop(); <-done }()
	waitFor(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return told == 4 })
	keys := []string{"b0-s", "b1-s"}
	for i := range 14 {
		keys = append(keys, fmt.Sprintf("x%02d", i))
	}
	keys = append(keys, "c0-s", "c1-s", "c2-s", "c3-s")
	queueKeys(t, store, keys...)
	queued := time.Now()
	wake <- struct{}{}
	// 14 runs of 100 ms on 4 slots: about 400 ms.
	waitFor(t, 2500*time.Millisecond, func() bool { mu.Lock(); defer mu.Unlock(); return len(started) == 14 })
	mu.Lock()
	defer mu.Unlock()
	for k, at := range started {
		if at.Sub(queued) > 2*time.Second {
			t.Fatalf("%s started %s after it was queued, with slots free", k, at.Sub(queued))
		}
	}
}

// waitFor fails the test unless cond holds within d.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %s", d)
		}
	}
}
