// Package worker claims due runs from a shared ledger and executes them; workers hold no state of their own.
package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Queue is the part of the ledger a worker takes work from. Implementations must make a claim
// exclusive across processes and machines.
type Queue interface {
	// ClaimBatch claims up to n due runs for owner, oldest first, in one transaction.
	ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error)
	QueueDepth(ctx context.Context) (int, error)
	// PausedRuns counts runs in needs_review and waiting_external.
	PausedRuns(ctx context.Context) (map[domain.RunState]int, error)
	// ExpireWaits dead-letters runs whose wait deadline passed.
	ExpireWaits(ctx context.Context, actor string) (int, error)
}

// Runner executes a run this worker has claimed, until it ends, pauses or ctx ends.
type Runner func(ctx context.Context, run *domain.Run) error

// Worker runs Concurrency slots, each executing one run at a time. One fetcher claims for
// every free slot at once and hands the runs out, so that a busy queue costs one claim
// transaction per batch rather than one per run.
type Worker struct {
	Queue       Queue
	Run         Runner
	Owner       string
	LeaseTTL    time.Duration
	Concurrency int
	Filter      domain.ClaimFilter
	// Poll is the fallback interval when no notification arrives.
	Poll time.Duration
	// FetchCooldown is how long the fetcher lets free slots gather after a full batch, while
	// more runs are due, before it claims again: batches stay large when runs end one by one.
	// Zero means 2 ms.
	FetchCooldown time.Duration
	// Wake fires when a run is queued (nil: poll only).
	Wake    <-chan struct{}
	Log     *slog.Logger
	Metrics *Metrics
}

// Serve claims and executes runs until ctx ends, then drains: runs in flight get up to drain
// to finish; after that they are cancelled, and the engine hands their leases back so that
// another worker resumes them at once.
func (w *Worker) Serve(ctx context.Context, drain time.Duration) error {
	if w.Concurrency < 1 {
		w.Concurrency = 1
	}
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.FetchCooldown <= 0 {
		w.FetchCooldown = 2 * time.Millisecond
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	runs := make(chan *domain.Run)
	free := make(chan struct{}, w.Concurrency)
	go w.housekeeping(ctx)
	var wg sync.WaitGroup
	for range w.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.slot(work, runs, free)
		}()
	}
	go func() {
		defer close(runs)
		w.fetch(ctx, runs, free)
	}()
	<-ctx.Done()
	w.Log.Info("draining", "owner", w.Owner, "drain_timeout", drain.String())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		w.Log.Warn("drain timeout: cancelling runs in flight; their leases are handed back", "owner", w.Owner)
		cancelWork()
		<-done
	}
	return nil
}

// housekeeping expires overdue waits and samples the queue depth.
func (w *Worker) housekeeping(ctx context.Context) {
	t := time.NewTicker(max(w.Poll, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := w.Queue.ExpireWaits(ctx, "worker "+w.Owner); err == nil && n > 0 {
				w.Log.Info("waits timed out", "runs", n)
			}
			if w.Metrics == nil {
				continue
			}
			if d, err := w.Queue.QueueDepth(ctx); err == nil {
				w.Metrics.QueueDepth.Set(float64(d))
			}
			if counts, err := w.Queue.PausedRuns(ctx); err == nil {
				w.Metrics.setPaused(counts)
			}
		}
	}
}

// slot executes the runs the fetcher hands it, one at a time, and says when it is free.
func (w *Worker) slot(work context.Context, runs <-chan *domain.Run, free chan<- struct{}) {
	free <- struct{}{}
	for run := range runs {
		w.Log.Info("claimed run", "run_id", run.ID, "pipeline", run.Pipeline, "idempotency_key", run.IdempotencyKey)
		if err := w.Run(work, run); err != nil && !errors.Is(err, context.Canceled) {
			w.Log.Info("run left the worker", "run_id", run.ID, "pipeline", run.Pipeline, "reason", err.Error())
		}
		free <- struct{}{}
	}
}

// fetch claims runs for the free slots until ctx ends. It claims for all free slots at once,
// then again at once while a claim comes back full (more is due), else when a notification
// arrives or the poll interval passes. Claimed runs are always handed to a slot, even when ctx
// ends meanwhile: they are this worker's until the slot runs them (and hands them back if it
// must stop).
func (w *Worker) fetch(ctx context.Context, runs chan<- *domain.Run, free <-chan struct{}) {
	slots, due := 0, true
	poll := time.NewTimer(w.Poll)
	defer poll.Stop()
	for ctx.Err() == nil {
		if slots == 0 {
			select {
			case <-ctx.Done():
				return
			case <-free:
				slots++
			}
			if due {
				// Let more slots free up before the next claim.
				cool := time.NewTimer(w.FetchCooldown)
			gather:
				for slots < w.Concurrency {
					select {
					case <-free:
						slots++
					case <-cool.C:
						break gather
					case <-ctx.Done():
						cool.Stop()
						return
					}
				}
				cool.Stop()
			}
		}
		for more := true; more; {
			select {
			case <-free:
				slots++
			default:
				more = false
			}
		}
		if slots == 0 {
			continue
		}
		if !due {
			select {
			case <-ctx.Done():
				return
			case <-free:
				slots++
				continue
			case _, ok := <-w.Wake:
				if !ok {
					w.Wake = nil
				}
			case <-poll.C:
			}
		}
		poll.Reset(w.Poll)
		start := time.Now()
		claimed, err := w.Queue.ClaimBatch(ctx, w.Owner, time.Now().Add(w.LeaseTTL), w.Filter, slots)
		if err != nil {
			if ctx.Err() == nil {
				w.Log.Warn("claim failed", "error", err)
			}
			due = false
			continue
		}
		if w.Metrics != nil {
			w.Metrics.ClaimSeconds.Observe(time.Since(start).Seconds())
		}
		due = len(claimed) == slots
		for _, r := range claimed {
			runs <- r
			slots--
		}
	}
}
