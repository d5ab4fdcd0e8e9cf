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

// TestHousekeepingSpacesCountsByTheirCost: behind a queue whose count takes 50 ms, a worker
// counts it once in three ticks (the next count would be 5 s later), while it expires waits
// at every tick and its gauge holds the count; a count that takes next to nothing is made at
// every tick, as before.
func TestHousekeepingSpacesCountsByTheirCost(t *testing.T) {
	if testing.Short() {
		t.Skip("three housekeeping ticks of a second")
	}
	cases := []struct {
		name       string
		countTime  time.Duration
		wantCounts int
	}{
		{name: "long queue", countTime: 50 * time.Millisecond, wantCounts: 1},
		{name: "short queue", countTime: 0, wantCounts: 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			q := &slowCountQueue{countTime: c.countTime}
			w := &Worker{Queue: q, Metrics: NewMetrics("test"), Poll: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
			defer cancel()
			w.housekeeping(ctx)
			q.mu.Lock()
			defer q.mu.Unlock()
			if q.expiries != 3 {
				t.Fatalf("waits expired at %d ticks, want 3", q.expiries)
			}
			if q.counts != c.wantCounts {
				t.Errorf("queue counted %d times in 3 ticks behind a count of %v, want %d", q.counts, c.countTime, c.wantCounts)
			}
			if got := gauge(t, w.Metrics, "pipectl_queue_depth"); got != 200000 {
				t.Errorf("pipectl_queue_depth = %v, want 200000", got)
			}
		})
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
