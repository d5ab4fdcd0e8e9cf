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
	ClaimNext(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter) (*domain.Run, error)
	QueueDepth(ctx context.Context) (int, error)
	// PausedRuns counts runs in needs_review and waiting_external.
	PausedRuns(ctx context.Context) (map[domain.RunState]int, error)
	// ExpireWaits dead-letters runs whose wait deadline passed.
	ExpireWaits(ctx context.Context, actor string) (int, error)
}

// Runner executes a run this worker has claimed, until it ends, pauses or ctx ends.
type Runner func(ctx context.Context, run *domain.Run) error

// Worker runs Concurrency slots, each claiming and executing one run at a time.
type Worker struct {
	Queue       Queue
	Run         Runner
	Owner       string
	LeaseTTL    time.Duration
	Concurrency int
	Filter      domain.ClaimFilter
	// Poll is the fallback interval when no notification arrives.
	Poll time.Duration
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
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	wakes := make([]chan struct{}, w.Concurrency)
	for i := range wakes {
		wakes[i] = make(chan struct{}, 1)
	}
	go w.fanOut(ctx, wakes)
	go w.housekeeping(ctx)
	var wg sync.WaitGroup
	for i := range w.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.slot(ctx, work, wakes[i])
		}()
	}
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

// fanOut passes each notification to every slot.
func (w *Worker) fanOut(ctx context.Context, wakes []chan struct{}) {
	if w.Wake == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Wake:
			if !ok {
				return
			}
			for _, c := range wakes {
				select {
				case c <- struct{}{}:
				default:
				}
			}
		}
	}
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

func (w *Worker) slot(ctx, work context.Context, wake <-chan struct{}) {
	for ctx.Err() == nil {
		start := time.Now()
		run, err := w.Queue.ClaimNext(ctx, w.Owner, time.Now().Add(w.LeaseTTL), w.Filter)
		if w.Metrics != nil && err == nil {
			w.Metrics.ClaimSeconds.Observe(time.Since(start).Seconds())
		}
		if err != nil {
			if ctx.Err() == nil {
				w.Log.Warn("claim failed", "error", err)
			}
			w.idle(ctx, wake)
			continue
		}
		if run == nil {
			w.idle(ctx, wake)
			continue
		}
		w.Log.Info("claimed run", "run_id", run.ID, "pipeline", run.Pipeline, "idempotency_key", run.IdempotencyKey)
		if err := w.Run(work, run); err != nil && !errors.Is(err, context.Canceled) {
			w.Log.Info("run left the worker", "run_id", run.ID, "pipeline", run.Pipeline, "reason", err.Error())
		}
	}
}

// idle waits for a notification or the poll interval.
func (w *Worker) idle(ctx context.Context, wake <-chan struct{}) {
	t := time.NewTimer(w.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-t.C:
	}
}
