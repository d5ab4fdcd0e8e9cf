package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/worker"
)

// TestStopIsNotHeldUpByAFinishingClaim: once the worker is told to stop (SIGTERM), a claim
// that finishes runs inside its transaction starts no more runs. It goes on, on a context of
// its own, so that what it claimed is not stranded; it used to go on starting runs for its
// whole budget (a quarter of the lease), and Serve returned that late whatever --drain said
// (found by a review).
func TestStopIsNotHeldUpByAFinishingClaim(t *testing.T) {
	store := queuedRuns(t, 400)
	ctx, stop := context.WithCancel(context.Background())
	var stoppedAt atomic.Int64
	var afterStop atomic.Int32
	w := &worker.Worker{
		Queue: store, Owner: "w", LeaseTTL: 16 * time.Second, Concurrency: 64, Poll: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error { return nil },
		Finish: func(ctx context.Context, r *domain.Run) *domain.Finished {
			if stoppedAt.Load() == 0 {
				stoppedAt.Store(time.Now().UnixNano())
				stop() // SIGTERM arrives while the claim executes its first run
			} else {
				afterStop.Add(1)
			}
			time.Sleep(20 * time.Millisecond) // a pure run that takes 20 ms
			return succeededInClaim(r)
		},
	}
	done := make(chan struct{})
	go func() { w.Serve(ctx, 100*time.Millisecond); close(done) }()
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
	}
	took := time.Since(time.Unix(0, stoppedAt.Load()))
	// The claims in flight (two) may each have been starting a run when the stop came; the
	// bound on the time is the claims' budget (a quarter of the lease, 4 s), which it used to
	// run to.
	if afterStop.Load() > 2 || took > 4*time.Second {
		t.Fatalf("after the stop (drain 100ms) the worker took %s to return and its claims started %d more runs", took, afterStop.Load())
	}
}

// TestStopHandsBackWhatAFinishingClaimLeft: the runs a claim cut short by a stop did not run
// are handed back, for another worker to take at once, not started in this worker's slots
// (all free while its claims finish runs) while it stops (found by a review).
func TestStopHandsBackWhatAFinishingClaimLeft(t *testing.T) {
	store := queuedRuns(t, 100)
	ctx, stop := context.WithCancel(context.Background())
	var stopped atomic.Bool
	var startedInSlots atomic.Int32
	w := &worker.Worker{
		Queue: store, Owner: "w", LeaseTTL: 16 * time.Second, Concurrency: 16, Poll: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			if stopped.Load() {
				startedInSlots.Add(1)
			}
			return nil
		},
		Finish: func(ctx context.Context, r *domain.Run) *domain.Finished {
			if !stopped.Swap(true) {
				stop()
				return nil
			}
			return nil
		},
	}
	done := make(chan struct{})
	go func() { w.Serve(ctx, 5*time.Second); close(done) }()
	<-done
	if n := startedInSlots.Load(); n > 0 {
		t.Fatalf("after the stop, %d runs of the stopped claim were started in slots instead of handed back", n)
	}
	runs, err := store.ListRuns(context.Background(), ledger.RunFilter{})
	if err != nil {
		t.Fatal(err)
	}
	handed := 0
	for _, r := range runs {
		switch {
		case r.State == domain.StateProcessing && domain.HandedBack(r.LeaseExpires):
			handed++
		case r.State != domain.StateQueued:
			t.Fatalf("%s is %s under %q after the stop", r.ID, r.State, r.LeaseOwner)
		}
	}
	if handed == 0 {
		t.Fatal("the stopped claim handed back no run")
	}
}

// queuedRuns opens a PostgreSQL ledger of its own with n fresh runs queued.
func queuedRuns(t *testing.T, n int) *ledger.Store {
	t.Helper()
	store := postgresQueue(t)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%04d", i)
	}
	queueKeys(t, store, keys...)
	return store
}

// succeededInClaim is what a claim writes for r, a run of one step that succeeded, executed
// by worker w.
func succeededInClaim(r *domain.Run) *domain.Finished {
	now := time.Now()
	return &domain.Finished{Run: r, Change: domain.Change{To: domain.StateSucceeded, Reason: "all steps completed", Actor: "w", Owner: "w"},
		Attempts: []*domain.Attempt{{RunID: r.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k" + r.ID,
			StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded}}}
}

// postgresQueue is a ledger on a PostgreSQL schema of the test's own.
func postgresQueue(t *testing.T) *ledger.Store {
	t.Helper()
	base := os.Getenv("PIPECTL_TEST_POSTGRES")
	if base == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	store, err := ledger.Open(context.Background(), ledger.PostgresTestSchema(t, base))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// queueKeys queues a run of pipeline p per key, in claim order (run r-<key>).
func queueKeys(t *testing.T, store *ledger.Store, keys ...string) {
	t.Helper()
	for _, k := range keys {
		r := &domain.Run{ID: "r-" + k, Pipeline: "p", IdempotencyKey: k, InputHash: "h" + k, Input: []byte(`{}`),
			SpecText: "spec", SpecHash: "sh", Version: "test"}
		if _, _, err := store.CreateRun(context.Background(), r, "test", nil); err != nil {
			t.Fatal(err)
		}
	}
}
