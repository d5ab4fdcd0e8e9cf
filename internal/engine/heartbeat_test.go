package engine_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// renewalStore records when each lease renewal landed.
type renewalStore struct {
	*countingStore
	mu  sync.Mutex
	at  []time.Time
	err error
	// hold, when set, makes the next renewal take that long.
	hold atomic.Int64
}

func (r *renewalStore) RenewLease(ctx context.Context, runID, owner string, until time.Time) error {
	if d := r.hold.Swap(0); d > 0 {
		time.Sleep(time.Duration(d))
	}
	err := r.countingStore.RenewLease(ctx, runID, owner, until)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at = append(r.at, time.Now())
	if err != nil && r.err == nil {
		r.err = err
	}
	return err
}

func (r *renewalStore) renewals() ([]time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...), r.err
}

// setupRenewals is an engine with a lease of 300 ms whose renewals are recorded.
func setupRenewals(t *testing.T) (*bundle, *renewalStore) {
	b := setup(t)
	store := &renewalStore{countingStore: b.store}
	b.eng.Store = store
	b.eng.LeaseTTL = 300 * time.Millisecond
	return b, store
}

// TestHeartbeatRenewsThroughALongStep: a step that lasts three leases keeps its run's lease
// alive, a renewal every third of the lease, with no gap in which the lease could run out;
// once the run has ended, no renewal is sent any more.
func TestHeartbeatRenewsThroughALongStep(t *testing.T) {
	b, store := setupRenewals(t)
	// A lease of a second, not 300 ms: under the race detector on a loaded CI machine one
	// SQLite write can take a few hundred milliseconds, and a shorter lease then ran out
	// between two renewals that were both on time. A heartbeat that stops still leaves a gap
	// of more than a lease.
	b.eng.LeaseTTL = time.Second
	ttl := b.eng.LeaseTTL
	start := time.Now()
	runSlowPost(t, b, func() { time.Sleep(3 * ttl) })
	ended := time.Now()
	at, err := store.renewals()
	if err != nil {
		t.Fatalf("a renewal failed: %v", err)
	}
	// 3 s of step at one renewal per 333 ms: about nine. Fewer than six means the heartbeat
	// stopped renewing somewhere along the way.
	if len(at) < 6 {
		t.Fatalf("%d renewals in %v with a lease of %v", len(at), ended.Sub(start), ttl)
	}
	last := start
	for i, a := range at {
		if gap := a.Sub(last); gap >= ttl {
			t.Fatalf("renewal %d came %v after the one before: the lease of %v could run out", i, gap, ttl)
		}
		last = a
	}
	time.Sleep(ttl)
	if after, _ := store.renewals(); len(after) != len(at) {
		t.Fatalf("%d renewals after the run ended", len(after)-len(at))
	}
}

// TestHeartbeatStopsWithARenewalInFlight: the run ends while a renewal is on its way to the
// ledger. The end waits for it, and that renewal must not arm another one.
func TestHeartbeatStopsWithARenewalInFlight(t *testing.T) {
	b, store := setupRenewals(t)
	ttl := b.eng.LeaseTTL
	runSlowPost(t, b, func() {
		time.Sleep(ttl / 2)
		// The next renewal (within a third of the lease) takes 300 ms: the step answers
		// while it is under way.
		store.hold.Store(int64(300 * time.Millisecond))
		time.Sleep(ttl / 2)
	})
	at, _ := store.renewals()
	if store.hold.Load() != 0 {
		t.Fatal("no renewal was under way when the step answered; the test proves nothing")
	}
	time.Sleep(2 * ttl)
	if after, _ := store.renewals(); len(after) != len(at) {
		t.Fatalf("%d renewals after the run ended (the one in flight armed the next)", len(after)-len(at))
	}
}

// runSlowPost runs a pipeline of one POST, answered once slow has returned.
func runSlowPost(t *testing.T, b *bundle, slow func()) {
	t.Helper()
	tg := newTarget(t)
	tg.script = append(tg.script, func(w http.ResponseWriter, r *http.Request) bool {
		slow()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok": true}`))
		return true
	})
	p := b.pipeline(t, header+`
steps:
  - id: write
    type: http
    method: POST
    url: `+tg.URL+`/things
`)
	if _, err := b.eng.Run(context.Background(), p, map[string]any{}, engine.RunOptions{}); err != nil {
		t.Fatal(err)
	}
}

// slowEndStore answers the write that ends a run only some time after it committed, as a
// loaded ledger may, and counts the renewals refused meanwhile.
type slowEndStore struct {
	*countingStore
	delay   time.Duration
	refused atomic.Int64
}

func (s *slowEndStore) ends(ch *domain.Change) bool {
	return ch != nil && ch.To != domain.StateProcessing
}

func (s *slowEndStore) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	err := s.countingStore.CommitAttempts(ctx, owner, done, start, ch)
	if s.ends(ch) {
		time.Sleep(s.delay)
	}
	return err
}

func (s *slowEndStore) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	err := s.countingStore.FinishAttempt(ctx, owner, a, ch)
	if s.ends(ch) {
		time.Sleep(s.delay)
	}
	return err
}

func (s *slowEndStore) Transition(ctx context.Context, id string, ch domain.Change) error {
	err := s.countingStore.Transition(ctx, id, ch)
	if s.ends(&ch) {
		time.Sleep(s.delay)
	}
	return err
}

func (s *slowEndStore) RenewLease(ctx context.Context, runID, owner string, until time.Time) error {
	err := s.countingStore.RenewLease(ctx, runID, owner, until)
	if errors.Is(err, domain.ErrLeaseLost) {
		s.refused.Add(1)
	}
	return err
}

// TestNoLeaseLostWhileTheEndCommits: a renewal that comes after the run's end is written, while
// that write is still being answered, finds the run no longer in processing. That is the run
// ending, not another process taking it: the log must not say the lease was lost.
func TestNoLeaseLostWhileTheEndCommits(t *testing.T) {
	b := setup(t)
	store := &slowEndStore{countingStore: b.store, delay: 300 * time.Millisecond}
	b.eng.Store = store
	b.eng.LeaseTTL = 150 * time.Millisecond // a renewal every 50 ms
	p := b.pipeline(t, header+`
steps:
  - {id: a, type: transform, output: {x: 1}}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if res.Run.State != domain.StateSucceeded {
		t.Fatalf("the run ended %s", res.Run.State)
	}
	if store.refused.Load() == 0 {
		t.Fatal("no renewal came while the end was being answered; the test proves nothing")
	}
	if logs := b.logs.String(); strings.Contains(logs, "lease lost") {
		t.Fatalf("the log says the lease was lost:\n%s", logs)
	}
}
