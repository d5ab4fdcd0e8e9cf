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
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
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
	for iter := 0; b.Loop(); iter++ {
		for i := range batch {
			if _, err := sub.Submit(context.Background(), p, map[string]any{"id": fmt.Sprintf("%d-%d", iter, i), "url": target.URL}); err != nil {
				b.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		done := make(chan struct{}, batch)
		for w := range n {
			store, err := ledger.Open(context.Background(), dsn)
			if err != nil {
				b.Fatal(err)
			}
			eng := newEngine(store, w+1)
			wk := &worker.Worker{Queue: store, Owner: eng.Owner.String(), LeaseTTL: 30 * time.Second, Concurrency: 1, Poll: 20 * time.Millisecond, Log: log,
				Run: func(ctx context.Context, r *domain.Run) error {
					in, _ := domain.DecodeJSON(r.Input)
					_, err := eng.Continue(ctx, p, r, in, engine.RunOptions{})
					done <- struct{}{}
					return err
				}}
			go func() { wk.Serve(ctx, time.Second); store.Close() }()
		}
		for range batch {
			<-done
		}
		elapsed += time.Since(start)
		total += batch
		cancel()
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "runs/s")
}

func BenchmarkWorkers1(b *testing.B) { benchWorkers(b, 1) }
func BenchmarkWorkers2(b *testing.B) { benchWorkers(b, 2) }
func BenchmarkWorkers4(b *testing.B) { benchWorkers(b, 4) }
