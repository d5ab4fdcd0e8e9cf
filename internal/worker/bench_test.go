package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/hostlane"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/steps"
	"github.com/pipectl/pipectl/internal/worker"
)

const ioSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: io
inputs: {type: object, properties: {id: {type: string}, url: {const: "http://target.invalid"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: a, type: http, method: POST, url: "${{ inputs.url }}/a"}
  - {id: b, type: http, method: POST, url: "${{ inputs.url }}/b"}
  - {id: c, type: http, method: POST, url: "${{ inputs.url }}/c"}
`

// benchWorkers measures runs/s of n single-slot workers, each with its own ledger connection
// and owner as separate processes would have, on a 3-step pipeline whose steps wait 20 ms on
// an HTTP target.
func benchWorkers(b *testing.B, n int) {
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		b.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	dsn = ledger.PostgresTestSchema(b, dsn)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusCreated)
	}))
	defer target.Close()
	v, err := dsl.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	p, diags := v.Parse(filepath.Join(b.TempDir(), "io.yaml"), []byte(strings.ReplaceAll(ioSpec, "http://target.invalid", target.URL)))
	if p == nil {
		b.Fatal(diags)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	newEngine := func(store engine.Store, i int) *engine.Engine {
		owner := engine.CurrentOwner()
		owner.Start = fmt.Sprintf("%s-w%d", owner.Start, i)
		return &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Log: log, Owner: owner, Actor: "bench", Version: "bench",
			Steps: map[domain.StepType]domain.StepExecutor{domain.StepHTTP: steps.NewHTTP(nil)}}
	}
	submitter, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer submitter.Close()
	sub := newEngine(submitter, 0)
	const batch = 40
	total := 0
	var elapsed time.Duration
	lanes := filepath.Join(b.TempDir(), "lanes")
	for iter := 0; b.Loop(); iter++ {
		for i := range batch {
			if _, err := sub.Submit(context.Background(), p, map[string]any{"id": fmt.Sprintf("%d-%d", iter, i), "url": target.URL}); err != nil {
				b.Fatal(err)
			}
		}
		elapsed += serveBatch(n, batch, func(i int, done chan<- struct{}) (*worker.Worker, func()) {
			store, err := ledger.Open(context.Background(), dsn)
			if err != nil {
				b.Fatal(err)
			}
			eng := newEngine(store, i+1)
			// As `pipectl worker` runs: claims offer each run to finish, and each worker has
			// its own hold on this host's lanes, as a process of its own would.
			return &worker.Worker{Queue: store, Owner: eng.Owner.String(), LeaseTTL: 30 * time.Second, Concurrency: 1, Poll: 20 * time.Millisecond, Log: log,
				Lanes: hostlane.New(lanes, "bench", 1),
				Run: func(ctx context.Context, r *domain.Run) error {
					in, _ := domain.DecodeJSON(r.Input)
					_, err := eng.Continue(ctx, p, r, in, engine.RunOptions{})
					done <- struct{}{}
					return err
				},
				// None of these runs is pure (each has an http step): the claim offers it and
				// takes it for a slot, as `pipectl worker`'s finisher does with such a run.
				Finish: func(context.Context, *domain.Run) *domain.Finished { return nil },
			}, func() { store.Close() }
		})
		total += batch
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "runs/s")
}

// serveBatch starts n workers made by newWorker, each of whose runs reports to done when it
// ends, waits until batch runs have ended, then stops the workers and waits until every one has
// stopped (and its stop has run). It returns the time until the batch had ended.
//
// The wait for the workers to stop is what lets the next batch be counted: a worker told to
// stop while a claim is in flight still runs what that claim brings (Worker.fetch hands out
// every claimed run), and that claim can take a run of the next batch, submitted meanwhile. Its
// end would be reported to this batch's done, which no one reads any more, and the next batch
// would wait for it forever (BenchmarkWorkers2 hung so).
func serveBatch(n, batch int, newWorker func(i int, done chan<- struct{}) (w *worker.Worker, stop func())) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, batch)
	var served sync.WaitGroup
	start := time.Now()
	for i := range n {
		w, stop := newWorker(i, done)
		served.Go(func() { w.Serve(ctx, time.Second); stop() })
	}
	for range batch {
		<-done
	}
	elapsed := time.Since(start)
	cancel()
	served.Wait()
	return elapsed
}

func BenchmarkWorkers1(b *testing.B) { benchWorkers(b, 1) }
func BenchmarkWorkers2(b *testing.B) { benchWorkers(b, 2) }
func BenchmarkWorkers4(b *testing.B) { benchWorkers(b, 4) }

// TestServeBatchStopsItsWorkers: when serveBatch returns, every worker it started has stopped,
// even one whose run outlives the batch's count (here: until the drain timeout cancels it), so
// that no worker of a batch can take and report a run of the next.
func TestServeBatchStopsItsWorkers(t *testing.T) {
	const n = 2
	q := &fakeQueue{left: n}
	var stopped atomic.Int32
	serveBatch(n, n, func(i int, done chan<- struct{}) (*worker.Worker, func()) {
		return &worker.Worker{Queue: q, Owner: fmt.Sprint("w", i), LeaseTTL: time.Minute, Concurrency: 1, Poll: time.Hour,
			Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
			Run: func(ctx context.Context, r *domain.Run) error {
				done <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}}, func() { stopped.Add(1) }
	})
	if got := stopped.Load(); got != n {
		t.Fatalf("%d of %d workers had stopped when serveBatch returned", got, n)
	}
}
