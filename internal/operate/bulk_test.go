package operate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// hookReader calls hook before the first read.
type hookReader struct {
	r    io.Reader
	once sync.Once
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	h.once.Do(h.hook)
	return h.r.Read(p)
}

// TestSubmitManyKillSwitchThrownWhileReading throws the switch after the first check, as an
// operator would while a long file is read: no batch is written after it, every valid line is
// refused as disabled, and lines refused for themselves keep their own reason.
func TestSubmitManyKillSwitchThrownWhileReading(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	lines := `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + `{"nope":1}` + "\n" + `{"id":"c"}` + "\n" + `{"id":"d"}` + "\n"
	r := &hookReader{r: strings.NewReader(lines), hook: func() {
		if err := b.ops.SetDisabled(ctx, "ops", b.p.Name, true, "incident"); err != nil {
			t.Error(err)
		}
	}}
	var heard []string
	res, err := b.ops.SubmitMany(ctx, "alice", operate.BulkRequest{Pipeline: b.p, Lines: r, Source: "in.jsonl", BatchRuns: 2,
		OnRefused: func(r operate.LineRefusal) {
			heard = append(heard, fmt.Sprintf("%d-%d %s", r.Line, r.Through, r.Reason))
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != 0 || res.Refused != 5 || res.Worst != operate.KindDisabled {
		t.Fatalf("created %d, refused %d, worst %v", res.Created, res.Refused, res.Worst)
	}
	want := []string{"1-2 disabled", "3-0 schema", "4-5 disabled"}
	if fmt.Sprint(heard) != fmt.Sprint(want) {
		t.Fatalf("refusals %v, want %v", heard, want)
	}
	if n, err := b.store.ListRuns(ctx, ledger.RunFilter{}); err != nil || len(n) != 0 {
		t.Fatalf("%d runs written after the switch was thrown (%v)", len(n), err)
	}
}

// TestSubmitManyBoundsRefusals keeps the first refusals only, however many lines are refused,
// while OnRefused hears of every one, in line order.
func TestSubmitManyBoundsRefusals(t *testing.T) {
	b := setup(t)
	const bad = operate.MaxRefusalsListed + 500
	var sb strings.Builder
	for i := range bad {
		fmt.Fprintf(&sb, "[%d]\n", i)
	}
	sb.WriteString(`{"id":"last"}`)
	heard, last := 0, 0
	res, err := b.ops.SubmitMany(context.Background(), "alice", operate.BulkRequest{Pipeline: b.p, Lines: strings.NewReader(sb.String()), Source: "x", BatchRuns: 7,
		OnRefused: func(r operate.LineRefusal) {
			heard++
			if r.Line <= last {
				t.Errorf("line %d heard after line %d", r.Line, last)
			}
			last = r.Line
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused != bad || heard != bad || len(res.Refusals) != operate.MaxRefusalsListed || res.RefusalsNotListed != 500 || res.Created != 1 || res.Lines != bad+1 {
		t.Fatalf("refused %d, heard %d, listed %d, not listed %d, created %d, lines %d", res.Refused, heard, len(res.Refusals), res.RefusalsNotListed, res.Created, res.Lines)
	}
	if res.Worst != operate.KindInvalid {
		t.Fatalf("worst kind %v", res.Worst)
	}
}

// flakyStore fails the next `fail` batch writes with err, writing nothing.
type flakyStore struct {
	*ledger.Store
	fail   atomic.Int32
	err    error
	writes atomic.Int32
}

func (f *flakyStore) NewBatchWriter(spec ledger.BatchSpec) ledger.RunWriter {
	return &flakyWriter{RunWriter: f.Store.NewBatchWriter(spec), f: f}
}

type flakyWriter struct {
	ledger.RunWriter
	f *flakyStore
}

func (w *flakyWriter) Create(ctx context.Context, runs []ledger.QueuedRun) ([]*ledger.Existing, error) {
	w.f.writes.Add(1)
	if w.f.fail.Add(-1) >= 0 {
		return nil, w.f.err
	}
	return w.RunWriter.Create(ctx, runs)
}

// TestSubmitManyWaitsOutALedgerOutage: a batch the ledger could not take because it was
// unreachable before the commit is written again; an error that leaves the outcome unknown
// stops the command after the batches already written.
func TestSubmitManyWaitsOutALedgerOutage(t *testing.T) {
	lines := ""
	for i := range 10 {
		lines += fmt.Sprintf(`{"id":"r%d"}`+"\n", i)
	}
	for _, tc := range []struct {
		name        string
		err         error
		fail        int32
		wantErr     bool
		wantCreated int
	}{
		{"unreachable, then back", fmt.Errorf("create runs: %w: dial tcp: connection refused", domain.ErrLedgerUnavailable), 3, false, 10},
		{"unknown outcome", errors.New("create runs: conn closed during COMMIT"), 1, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			store := &flakyStore{Store: b.store, err: tc.err}
			store.fail.Store(tc.fail)
			b.ops.Store = store
			res, err := b.ops.SubmitMany(context.Background(), "alice", operate.BulkRequest{Pipeline: b.p, Lines: strings.NewReader(lines), Source: "x",
				BatchRuns: 3, LedgerWait: 10 * time.Second})
			if (err != nil) != tc.wantErr || res.Created != tc.wantCreated {
				t.Fatalf("err %v, created %d; want error %v, %d created", err, res.Created, tc.wantErr, tc.wantCreated)
			}
			runs, err := b.store.ListRuns(context.Background(), ledger.RunFilter{})
			if err != nil || len(runs) != tc.wantCreated {
				t.Fatalf("%d runs in the ledger (%v), want %d", len(runs), err, tc.wantCreated)
			}
			if !tc.wantErr && store.writes.Load() != 4+tc.fail {
				t.Fatalf("%d batch writes, want 4 and %d again", store.writes.Load(), tc.fail)
			}
		})
	}
}
