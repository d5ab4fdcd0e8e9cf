package engine_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/steps"
)

func benchEngine(b *testing.B, sync string) (*engine.Engine, *ledger.Store, *dsl.Validator) {
	b.Helper()
	dsn := "sqlite:" + filepath.Join(b.TempDir(), "ledger.db")
	if sync != "" {
		dsn += "?synchronous=" + sync
	}
	st, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	v, err := dsl.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	eng := &engine.Engine{
		Store: st, Renderer: dsl.NewEvaluator(v.Expressions()),
		Steps: map[domain.StepType]domain.StepExecutor{domain.StepTransform: steps.Transform{}},
		Log:   slog.New(slog.NewJSONHandler(io.Discard, nil)), Owner: engine.CurrentOwner(), Actor: "bench", Version: "bench",
	}
	return eng, st, v
}

func transformSpec(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: pipectl/v1\nkind: Pipeline\nname: bench\nidempotency: {key: \"${{ string(inputs.i) }}\"}\nsteps:\n")
	b.WriteString("  - {id: s0, type: transform, output: {n: \"${{ inputs.i }}\", tag: \"run-${{ string(inputs.i) }}\"}}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - {id: s%d, type: transform, output: {n: \"${{ steps.s%d.output.n + 1 }}\", tag: \"${{ steps.s%d.output.tag }}\"}}\n", i, i-1, i-1)
	}
	return b.String()
}

func benchPipeline(b *testing.B, v *dsl.Validator, steps int) *domain.Pipeline {
	path := filepath.Join(b.TempDir(), "bench.yaml")
	p, diags := v.Parse(path, []byte(transformSpec(steps)))
	if p == nil {
		b.Fatal(diags)
	}
	return p
}

// benchRuns executes whole runs of an n-step transform pipeline, one after another, and reports
// runs/s and steps/s.
func benchRuns(b *testing.B, sync string, n int) {
	eng, _, v := benchEngine(b, sync)
	p := benchPipeline(b, v, n)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		res, err := eng.Run(ctx, p, map[string]any{"i": int64(i)}, engine.RunOptions{})
		if err != nil || res.Run.State != domain.StateSucceeded {
			b.Fatalf("%v %+v", err, res)
		}
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(i)/secs, "runs/s")
	b.ReportMetric(float64(i*n)/secs, "steps/s")
}

// benchFloor is the raw cost of one committed single-row SQLite transaction on the same kind
// of connection the ledger uses: the floor any durable engine pays per step.
func benchFloor(b *testing.B, sync string) {
	_, st, _ := benchEngine(b, sync)
	db := st.DB()
	if _, err := db.Exec(`CREATE TABLE floor (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO floor (v) VALUES ('x')`); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

func BenchmarkFloorCommitFull(b *testing.B)   { benchFloor(b, "") }
func BenchmarkFloorCommitNormal(b *testing.B) { benchFloor(b, "normal") }
func BenchmarkRun10StepsFull(b *testing.B)    { benchRuns(b, "", 10) }
func BenchmarkRun10StepsNormal(b *testing.B)  { benchRuns(b, "normal", 10) }
func BenchmarkRun3StepsFull(b *testing.B)     { benchRuns(b, "", 3) }
func BenchmarkRun3StepsNormal(b *testing.B)   { benchRuns(b, "normal", 3) }
