package worker_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/steps"
	"github.com/pipectl/pipectl/internal/worker"
)

const sleepSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: sleepy
inputs: {type: object, properties: {id: {type: string}, secs: {type: string, pattern: "^[0-9]+(\\.[0-9]+)?$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: nap, type: exec, command: [sleep, "${{ inputs.secs }}"], timeout: 1m}
`

type fixture struct {
	store *ledger.Store
	eng   *engine.Engine
	p     *domain.Pipeline
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := ledger.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, diags := v.Parse(filepath.Join(t.TempDir(), "sleepy.yaml"), []byte(sleepSpec))
	if p == nil {
		t.Fatal(diags)
	}
	eng := &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Owner: engine.CurrentOwner(), Actor: "test", Version: "test", LeaseTTL: 5 * time.Second,
		Steps: map[domain.StepType]domain.StepExecutor{domain.StepExec: steps.Exec{}}}
	return &fixture{store: store, eng: eng, p: p}
}

func (f *fixture) worker(metrics *worker.Metrics) *worker.Worker {
	return &worker.Worker{Queue: f.store, Owner: f.eng.Owner.String(), LeaseTTL: 5 * time.Second, Concurrency: 2, Poll: 20 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: metrics,
		Run: func(ctx context.Context, r *domain.Run) error {
			in, _ := domain.DecodeJSON(r.Input)
			_, err := f.eng.Continue(ctx, f.p, r, in, engine.RunOptions{})
			return err
		}}
}

func (f *fixture) submit(t *testing.T, id, secs string) *domain.Run {
	t.Helper()
	res, err := f.eng.Submit(context.Background(), f.p, map[string]any{"id": id, "secs": secs})
	if err != nil {
		t.Fatal(err)
	}
	return res.Run
}

func TestWorkerExecutesQueuedRuns(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for _, id := range []string{"a", "b", "c"} {
		ids = append(ids, f.submit(t, id, "0").ID)
	}
	metrics := worker.NewMetrics("test")
	f.eng.Observer = metrics
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- f.worker(metrics).Serve(ctx, time.Second) }()
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for {
			r, err := f.store.GetRun(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if r.State == domain.StateSucceeded {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %s is %s", id, r.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, fam := range families {
		if fam.GetName() == "pipectl_runs_total" {
			for _, m := range fam.GetMetric() {
				if m.GetCounter().GetValue() == 3 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("pipectl_runs_total does not count the three runs")
	}
}

// TestDrainHandsBackRunsInFlight stops a worker whose run outlasts the drain: the run is
// cancelled and its lease handed back, so another worker can take it at once.
func TestDrainHandsBackRunsInFlight(t *testing.T) {
	f := newFixture(t)
	run := f.submit(t, "long", "30")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- f.worker(nil).Serve(ctx, 200*time.Millisecond) }()
	for {
		r, _ := f.store.GetRun(context.Background(), run.ID)
		if r.State == domain.StateProcessing {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("drain took %s", took)
	}
	r, err := f.store.GetRun(context.Background(), run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != domain.StateProcessing || !r.LeaseExpires.Before(time.Now()) {
		t.Fatalf("after the drain the run is %s with a lease until %s; it must be handed back", r.State, r.LeaseExpires)
	}
	// Another worker takes it over at once.
	taken, err := f.store.ClaimNext(context.Background(), "other-worker", time.Now().Add(time.Minute), domain.ClaimFilter{})
	if err != nil || taken == nil || taken.ID != run.ID || taken.LeaseOwner != "other-worker" {
		t.Fatalf("takeover: %+v %v", taken, err)
	}
}
