package worker

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestGaugeSpacing: the next count is due once gaugeCostShare times the last count's time
// went by, counted from when it began, and never later than gaugeStaleness.
func TestGaugeSpacing(t *testing.T) {
	began := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		took  time.Duration
		after time.Duration
		due   bool
	}{
		{took: time.Millisecond, after: time.Second, due: true},
		{took: time.Millisecond, after: 99 * time.Millisecond, due: false},
		{took: 58 * time.Millisecond, after: time.Second, due: false},
		{took: 58 * time.Millisecond, after: 5799 * time.Millisecond, due: false},
		{took: 58 * time.Millisecond, after: 5800 * time.Millisecond, due: true},
		{took: 300 * time.Millisecond, after: 29 * time.Second, due: false},
		{took: 300 * time.Millisecond, after: 30 * time.Second, due: true},
		{took: 10 * time.Second, after: 119 * time.Second, due: false},
		{took: 10 * time.Second, after: 2 * time.Minute, due: true},
	}
	for _, c := range cases {
		var g gaugeSpacing
		if !g.due(began) {
			t.Fatal("a worker that never counted is not due")
		}
		g.took(began, c.took)
		if got := g.due(began.Add(c.after)); got != c.due {
			t.Errorf("count of %v, %v after it began: due %v, want %v", c.took, c.after, got, c.due)
		}
	}
}

// TestGaugeSpacingGoesByTheQuickerOfTwoCounts: one slow count after a quick one does not
// space the next count by the slow one; two slow counts in a row do.
func TestGaugeSpacingGoesByTheQuickerOfTwoCounts(t *testing.T) {
	began := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		first, second time.Duration
		after         time.Duration // after the second began
		due           bool
	}{
		{first: 2 * time.Millisecond, second: 1200 * time.Millisecond, after: time.Second, due: true},
		{first: 2 * time.Millisecond, second: 1200 * time.Millisecond, after: 199 * time.Millisecond, due: false},
		{first: 1200 * time.Millisecond, second: 2 * time.Millisecond, after: time.Second, due: true},
		{first: 60 * time.Millisecond, second: 58 * time.Millisecond, after: 5799 * time.Millisecond, due: false},
		{first: 60 * time.Millisecond, second: 58 * time.Millisecond, after: 5800 * time.Millisecond, due: true},
		{first: 5 * time.Second, second: 10 * time.Second, after: 119 * time.Second, due: false},
		{first: 5 * time.Second, second: 10 * time.Second, after: 2 * time.Minute, due: true},
	}
	for _, c := range cases {
		var g gaugeSpacing
		g.took(began.Add(-time.Minute), c.first)
		g.took(began, c.second)
		if got := g.due(began.Add(c.after)); got != c.due {
			t.Errorf("counts of %v then %v, %v after the second began: due %v, want %v", c.first, c.second, c.after, got, c.due)
		}
	}
}

// slowCountQueue is a ledger whose queue count takes countTime, as a count of a long queue
// does; it counts the calls of each kind of housekeeping.
type slowCountQueue struct {
	countTime time.Duration
	mu        sync.Mutex
	counts    int
	expiries  int
}

func (q *slowCountQueue) ClaimBatch(context.Context, string, time.Time, domain.ClaimFilter, int) ([]*domain.Run, error) {
	return nil, nil
}
func (q *slowCountQueue) QueueDepth(context.Context) (int, error) {
	time.Sleep(q.countTime)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.counts++
	return 200000, nil
}
func (q *slowCountQueue) PausedRuns(context.Context) (map[domain.RunState]int, error) {
	return nil, nil
}
func (q *slowCountQueue) ExpireWaits(context.Context, string) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.expiries++
	return 0, nil
}
func (q *slowCountQueue) HandBack(context.Context, string, string, string) error { return nil }

// TestHousekeepingCountsALongQueueLessOften: behind a queue whose count takes 50 ms, a worker
// counts it once in three ticks (the next count is 5 s after the first), while it expires
// waits at every tick and its gauge holds the count. (Counts at every tick of a short queue
// are TestGaugeSpacing's: here they would hang on the scheduler's timing.)
func TestHousekeepingCountsALongQueueLessOften(t *testing.T) {
	if testing.Short() {
		t.Skip("three housekeeping ticks of a second")
	}
	q := &slowCountQueue{countTime: 50 * time.Millisecond}
	w := &Worker{Queue: q, Metrics: NewMetrics("test"), Poll: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 3900*time.Millisecond)
	defer cancel()
	w.housekeeping(ctx)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.expiries != 3 {
		t.Fatalf("waits expired at %d ticks, want 3", q.expiries)
	}
	if q.counts != 1 {
		t.Errorf("queue counted %d times in 3 ticks behind a count of 50 ms, want 1", q.counts)
	}
	if got := gauge(t, w.Metrics, "pipectl_queue_depth"); got != 200000 {
		t.Errorf("pipectl_queue_depth = %v, want 200000", got)
	}
}

// gauge reads the value of the gauge called name from m's registry.
func gauge(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
