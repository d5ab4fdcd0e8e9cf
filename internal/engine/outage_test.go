package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// outageStore fails the next writes as a ledger whose database restarts does.
type outageStore struct {
	*countingStore
	failures atomic.Int64 // writes still to fail
	err      error
}

func (o *outageStore) fail() error {
	if o.failures.Add(-1) >= 0 {
		return o.err
	}
	return nil
}

func (o *outageStore) StartAttempt(ctx context.Context, owner string, a *domain.Attempt) error {
	if err := o.fail(); err != nil {
		return err
	}
	return o.countingStore.StartAttempt(ctx, owner, a)
}

func (o *outageStore) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	if err := o.fail(); err != nil {
		return err
	}
	return o.countingStore.FinishAttempt(ctx, owner, a, ch)
}

func (o *outageStore) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	if err := o.fail(); err != nil {
		return err
	}
	return o.countingStore.CommitAttempts(ctx, owner, done, start, ch)
}

const outageSpec = `
steps:
  - {id: first, type: transform, output: 1}
  - {id: write, type: http, method: POST, url: TARGET/things}
  - {id: after, type: transform, output: 2}
  - {id: again, type: http, method: POST, url: TARGET/more}
`

// TestLedgerOutageIsWaitedOut: writes that fail because the database is unreachable (the
// ledger says so only when nothing was committed) are tried again, and the run goes on as if
// nothing happened (found by TestFaultPostgresRestart: a worker dropped the run at the first
// failed commit, and it waited for its lease to expire).
func TestLedgerOutageIsWaitedOut(t *testing.T) {
	b := setup(t)
	store := &outageStore{countingStore: b.store, err: fmt.Errorf("%w: dial tcp: connection refused", domain.ErrLedgerUnavailable)}
	b.eng.Store = store
	b.eng.LeaseTTL = 5 * time.Second
	tg := newTarget(t)
	p := b.pipeline(t, header+strings.ReplaceAll(outageSpec, "TARGET", tg.URL))
	// The next three writes fail: the first intent is tried four times.
	store.failures.Store(3)
	res, err := b.eng.Run(context.Background(), p, map[string]any{}, engine.RunOptions{})
	if err != nil || res.Run.State != domain.StateSucceeded {
		t.Fatalf("run: %v (%v)", err, res)
	}
	for _, a := range b.attempts(t, res.Run.ID) {
		if a.Outcome != domain.OutcomeSucceeded || a.Attempt != 1 {
			t.Fatalf("%s attempt %d is %s: the outage counted as a failure", a.StepID, a.Attempt, a.Outcome)
		}
	}
	for key, n := range tg.applied {
		if n != 1 {
			t.Fatalf("key %s applied %d times", key, n)
		}
	}
}

// TestUnrecordedIntentIsNoStepFailure: when the intent of a side effect cannot be committed
// (and the ledger cannot tell that nothing was written, so it is not tried again), the step did
// not run: the pass stops with the ledger's error and no failed attempt is recorded (it used
// to count as an unknown failure of the step, and two of them dead-lettered the run).
func TestUnrecordedIntentIsNoStepFailure(t *testing.T) {
	b := setup(t)
	store := &outageStore{countingStore: b.store, err: errors.New("conn closed")}
	b.eng.Store = store
	tg := newTarget(t)
	p := b.pipeline(t, header+strings.ReplaceAll(outageSpec, "TARGET", tg.URL))
	store.failures.Store(1)
	res, err := b.eng.Run(context.Background(), p, map[string]any{}, engine.RunOptions{})
	if err == nil || res == nil || res.Run == nil {
		t.Fatalf("run: %v, want the ledger's error", err)
	}
	for _, a := range b.attempts(t, res.Run.ID) {
		if a.Outcome == domain.OutcomeFailed {
			t.Fatalf("%s attempt %d recorded as failed (%s): the step never ran", a.StepID, a.Attempt, a.Error)
		}
	}
	if res.Run.State != domain.StateProcessing || tg.total.Load() != 0 {
		t.Fatalf("run is %s and the target saw %d requests; want it left for the next owner untouched", res.Run.State, tg.total.Load())
	}
}
