package engine_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

// cutOffStore loses every lease renewal while cut is set: the heartbeats of a process that is
// paused or cut off from the ledger do not land.
type cutOffStore struct {
	*countingStore
	cut atomic.Bool
}

func (c *cutOffStore) RenewLease(ctx context.Context, runID, owner string, until time.Time) error {
	if c.cut.Load() {
		return errors.New("connection refused")
	}
	return c.countingStore.RenewLease(ctx, runID, owner, until)
}

// TestFenceRefusesASideEffectAfterTheLeaseRanOut: the owner's heartbeats stop landing while
// its guard probe hangs for longer than the lease, and another process takes the run over.
// When the guard answers, the side effect must not be sent (found by TestFaultPausedWorker:
// a worker woken from SIGSTOP sent it), and nothing of the old owner's is written.
func TestFenceRefusesASideEffectAfterTheLeaseRanOut(t *testing.T) {
	b := setup(t)
	store := &cutOffStore{countingStore: b.store}
	b.eng.Store = store
	b.eng.LeaseTTL = 300 * time.Millisecond
	tg := newTarget(t)
	var runID atomic.Value
	tg.script = append(tg.script, func(w http.ResponseWriter, r *http.Request) bool {
		store.cut.Store(true)
		time.Sleep(3 * b.eng.LeaseTTL)
		if err := b.store.TakeOver(context.Background(), runID.Load().(string), b.eng.Owner.String(), "elsewhere:1:1",
			time.Now().Add(time.Minute), "taken over from the paused owner (lease expired)", "test"); err != nil {
			t.Errorf("take over: %v", err)
		}
		store.cut.Store(false) // awake again: the ledger now says who holds the run
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"done": false}`))
		return true
	})
	p := b.pipeline(t, header+`
steps:
  - id: write
    type: http
    method: POST
    url: `+tg.URL+`/things
    guard:
      url: `+tg.URL+`/things/1
      done_if: ${{ response.body.done }}
`)
	// The run id is known once the run is created: watch the ledger for it.
	go func() {
		for runID.Load() == nil {
			if runs, _ := b.store.ListRuns(context.Background(), ledger.RunFilter{}); len(runs) > 0 {
				runID.Store(runs[0].ID)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := b.eng.Run(context.Background(), p, map[string]any{}, engine.RunOptions{})
	if !errors.Is(err, domain.ErrLeaseLost) {
		t.Fatalf("run: %v, want the lease lost", err)
	}
	if n := len(tg.applied); n != 0 {
		t.Fatalf("the side effect was sent %d times after the lease ran out", n)
	}
	if !strings.Contains(b.logs.String(), "lease lost") {
		t.Fatalf("the log does not say the lease was lost:\n%s", b.logs.String())
	}
	r, _ := b.store.GetRun(context.Background(), runID.Load().(string))
	if r.State != domain.StateProcessing || r.LeaseOwner != "elsewhere:1:1" {
		t.Fatalf("run is %s under %q; the new owner must hold it untouched", r.State, r.LeaseOwner)
	}
}
