package ledger

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
)

func TestBatchWriterCreate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		// A run created alone holds key "old"; the batch meets it.
		if _, _, err := s.CreateRun(ctx, newRun(t, "bulk", "old"), "alice", nil); err != nil {
			t.Fatal(err)
		}
		w := s.NewBatchWriter(BatchSpec{Pipeline: "bulk", SpecText: "spec", SpecHash: "sh", SpecPath: "p.yaml", Version: "test", Actor: "bob"})
		defer w.Close()
		q := func(id, key, hash string) QueuedRun {
			return QueuedRun{ID: id, IdempotencyKey: key, InputHash: hash, Input: []byte(`{"k":"` + key + `"}`)}
		}
		batch := []QueuedRun{
			q("b1", "a", "ha"),
			q("b2", "old", "h-old"),
			q("b3", "a", "ha"),     // same key and input as b1, in the same batch
			q("b4", "a", "hother"), // same key as b1, another input
			q("b5", "b", "hb"),
			q("b6", "old", "h-x"),
		}
		got, err := w.Create(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"", "old:h-old:queued", "b1:ha:queued", "b1:ha:queued", "", "old:h-old:queued"}
		for i, e := range got {
			s := ""
			if e != nil {
				s = fmt.Sprintf("%s:%s:%s", e.ID, e.InputHash, e.State)
				if e.ID != "b1" {
					s = fmt.Sprintf("old:%s:%s", e.InputHash, e.State)
				}
			}
			if s != want[i] {
				t.Errorf("run %d (%s): got %q, want %q", i, batch[i].ID, s, want[i])
			}
		}
		for _, id := range []string{"b1", "b5"} {
			r, err := s.GetRun(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if r.State != domain.StateQueued || r.SpecText != "spec" || r.SpecHash != "sh" || r.SpecPath != "p.yaml" || r.Version != "test" ||
				r.StepKeyBase != r.IdempotencyKey || r.CreatedAt.IsZero() || r.LeaseOwner != "" || string(r.Input) != `{"k":"`+r.IdempotencyKey+`"}` {
				t.Errorf("run %s: %+v", id, r)
			}
			ev, err := s.Events(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(ev) != 1 || ev[0].To != domain.StateQueued || ev[0].Actor != "bob" || ev[0].Reason != "created" {
				t.Errorf("run %s events: %+v", id, ev)
			}
		}
		for _, id := range []string{"b2", "b3", "b4", "b6"} {
			if _, err := s.GetRun(ctx, id); err == nil {
				t.Errorf("run %s was written though its key was taken", id)
			}
		}
		// The same batch again creates nothing.
		again, err := w.Create(ctx, []QueuedRun{q("c1", "a", "ha"), q("c2", "b", "hb")})
		if err != nil {
			t.Fatal(err)
		}
		if again[0] == nil || again[0].ID != "b1" || again[1] == nil || again[1].ID != "b5" {
			t.Errorf("rerun: %+v %+v", again[0], again[1])
		}
	})
}

// TestBatchWriterSizes writes batches of many sizes (a prepared statement each, up to the
// writer's cap, unprepared beyond) and the largest batch the writer takes.
func TestBatchWriterSizes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		w := s.NewBatchWriter(BatchSpec{Pipeline: "sizes", SpecText: "spec", SpecHash: "sh", Version: "test", Actor: "bob"})
		defer w.Close()
		n := 0
		for _, size := range []int{1, 2, 3, 5, 7, 11, 13, 17, 19, 23, MaxBatchRuns} {
			batch := make([]QueuedRun, size)
			for i := range batch {
				n++
				batch[i] = QueuedRun{ID: fmt.Sprintf("s%d", n), IdempotencyKey: fmt.Sprintf("k%d", n), InputHash: "h", Input: []byte(`{}`)}
			}
			got, err := w.Create(ctx, batch)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			for i, e := range got {
				if e != nil {
					t.Fatalf("size %d: run %d not created: %+v", size, i, e)
				}
			}
		}
		runs, err := s.ListRuns(ctx, RunFilter{Pipeline: "sizes", Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != n {
			t.Errorf("%d runs in the ledger, want %d", len(runs), n)
		}
		if _, err := w.Create(ctx, make([]QueuedRun, MaxBatchRuns+1)); err == nil {
			t.Error("a batch over the limit was accepted")
		}
	})
}

// BenchmarkBatchWriterCreate is the ledger's share of a bulk submission: batches of 100, 500
// and 2,000 runs prepared beforehand (ids, keys, canonical inputs; a 2 KB spec), written one
// commit each; runs/s.
func BenchmarkBatchWriterCreate(b *testing.B) {
	open := map[string]func(b *testing.B) *Store{
		"sqlite-full": func(b *testing.B) *Store {
			s, err := Open(context.Background(), "sqlite:"+b.TempDir()+"/ledger.db")
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		"postgres": func(b *testing.B) *Store {
			dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
			if dsn == "" {
				b.Skip("PIPECTL_TEST_POSTGRES is not set")
			}
			s, err := Open(context.Background(), PostgresTestSchema(b, dsn))
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for name, o := range open {
		for _, size := range []int{100, 500, 2000} {
			b.Run(fmt.Sprintf("%s/batch-%d", name, size), func(b *testing.B) { benchBatches(b, o(b), size) })
		}
	}
}

func benchBatches(b *testing.B, s *Store, size int) {
	defer s.Close()
	spec := strings.Repeat("# a pipeline of about two kilobytes\n", 56)
	w := s.NewBatchWriter(BatchSpec{Pipeline: "bench", SpecText: spec, SpecHash: "sh", SpecPath: "p.yaml", Version: "test", Actor: "bench"})
	defer w.Close()
	n := 0
	for b.Loop() {
		b.StopTimer()
		batch := make([]QueuedRun, size)
		for i := range batch {
			n++
			batch[i] = QueuedRun{ID: fmt.Sprintf("%026d", n), IdempotencyKey: fmt.Sprintf("t-%08d", n), InputHash: fmt.Sprintf("%064d", n),
				Input: []byte(fmt.Sprintf(`{"id":"t-%08d","n":%d,"priority":"high"}`, n, n))}
		}
		b.StartTimer()
		if _, err := w.Create(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "runs/s")
}
