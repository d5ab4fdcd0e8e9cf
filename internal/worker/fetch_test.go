package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/worker"
)

// fakeQueue hands out numbered runs and records how many each claim asked for, and which
// runs were handed back. A claim takes latency (none when zero).
type fakeQueue struct {
	mu       sync.Mutex
	left     int
	next     int
	asked    []int
	granted  []int
	released []string
	reasons  []string
	latency  time.Duration
	// claimed, when set, is told how many runs all claims so far have granted.
	claimed func(total int)
}

func (q *fakeQueue) ClaimBatch(_ context.Context, owner string, _ time.Time, _ domain.ClaimFilter, n int) ([]*domain.Run, error) {
	time.Sleep(q.latency)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.asked = append(q.asked, n)
	var out []*domain.Run
	for ; n > 0 && q.left > 0; n-- {
		q.next++
		q.left--
		out = append(out, &domain.Run{ID: fmt.Sprint("run-", q.next), State: domain.StateProcessing, LeaseOwner: owner})
	}
	q.granted = append(q.granted, len(out))
	if q.claimed != nil {
		total := 0
		for _, n := range q.granted {
			total += n
		}
		q.claimed(total)
	}
	return out, nil
}

func (q *fakeQueue) QueueDepth(context.Context) (int, error) { return 0, nil }

// total is how many runs all claims so far have granted.
func (q *fakeQueue) total() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	total := 0
	for _, n := range q.granted {
		total += n
	}
	return total
}

func (q *fakeQueue) PausedRuns(context.Context) (map[domain.RunState]int, error) {
	return nil, nil
}
func (q *fakeQueue) ExpireWaits(context.Context, string) (int, error) { return 0, nil }
func (q *fakeQueue) HandBack(_ context.Context, runID, _, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.released = append(q.released, runID)
	q.reasons = append(q.reasons, reason)
	return nil
}

// TestFetcherClaimsForFreeSlots: the first claim asks for every slot at once, no claim asks
// for more than the slots and a reserve as large (while the queue is busy), no more runs
// execute at once than there are slots, and every run is executed exactly once.
func TestFetcherClaimsForFreeSlots(t *testing.T) {
	const slots, runs = 8, 100
	q := &fakeQueue{left: runs}
	var mu sync.Mutex
	running, most := 0, 0
	seen := map[string]int{}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			mu.Lock()
			running++
			most = max(most, running)
			seen[r.ID]++
			finished := len(seen) == runs
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			if finished {
				close(done)
			}
			return nil
		}}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	// The poll interval is an hour: only full batches lead to the next claim without a wake-up.
	<-done
	cancel()
	<-served
	if most > slots {
		t.Fatalf("%d runs executed at once on %d slots", most, slots)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s executed %d times", id, n)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.asked[0] != slots {
		t.Fatalf("the first claim asked for %d runs, want all %d slots", q.asked[0], slots)
	}
	for _, n := range q.asked {
		if n < 1 || n > 2*slots {
			t.Fatalf("a claim asked for %d runs with %d slots: %v", n, slots, q.asked)
		}
	}
	if len(q.asked) >= runs {
		t.Fatalf("%d claims for %d runs: no batching", len(q.asked), runs)
	}
}

// TestFetcherWaitsForWakeWhenDrained: after a claim that came back short, the fetcher claims
// again on a notification, not before.
func TestFetcherWaitsForWakeWhenDrained(t *testing.T) {
	q := &fakeQueue{left: 3}
	wake := make(chan struct{}, 1)
	ran := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 4, Poll: time.Hour, Wake: wake,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error { ran <- r.ID; return nil }}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	for range 3 {
		<-ran
	}
	q.mu.Lock()
	claims := len(q.asked)
	q.left = 2
	q.mu.Unlock()
	if claims != 1 {
		t.Fatalf("%d claims before any wake-up, want 1 (it came back short)", claims)
	}
	wake <- struct{}{}
	for range 2 {
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("the wake-up did not lead to a claim of the runs queued after the drain")
		}
	}
	cancel()
	<-served
	q.mu.Lock()
	defer q.mu.Unlock()
	// The slots report free one by one after their runs, so the wake-up may find only some
	// of them free: the runs queued after it may come in more than one claim.
	after := 0
	for _, n := range q.granted[1:] {
		after += n
	}
	if len(q.asked) < 2 || after != 2 {
		t.Fatalf("claims %v granted %v: the claims after the wake-up took %d runs, want 2", q.asked, q.granted, after)
	}
}

// blockingQueue's first claim waits until release is closed and then takes the one run it
// holds; entered is closed when that claim has started.
type blockingQueue struct {
	fakeQueue
	entered, release chan struct{}
	once             sync.Once
}

func (q *blockingQueue) ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error) {
	q.once.Do(func() { close(q.entered); <-q.release })
	return q.fakeQueue.ClaimBatch(ctx, owner, until, f, n)
}

// TestClaimInFlightAtStopIsRun: a worker told to stop while a claim is in flight still runs
// what that claim brings (its lease names this worker; no one else could take the run before
// the lease ran out), and Serve returns only after it ran. A caller that stops workers and
// starts others must therefore wait for Serve to return before it counts what the others run
// (see serveBatch in bench_test.go).
func TestClaimInFlightAtStopIsRun(t *testing.T) {
	q := &blockingQueue{fakeQueue: fakeQueue{left: 1}, entered: make(chan struct{}), release: make(chan struct{})}
	var ran []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 1, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error { ran = append(ran, r.ID); return nil }}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Hour); close(served) }()
	<-q.entered
	cancel()
	close(q.release)
	<-served
	if len(ran) != 1 || ran[0] != "run-1" {
		t.Fatalf("ran %v after a stop with a claim in flight, want [run-1]", ran)
	}
}

// countingRunner executes runs of fn's choosing and records how many ran at once and how
// often each ran.
type countingRunner struct {
	mu      sync.Mutex
	running int
	most    int
	seen    map[string]int
}

func (c *countingRunner) run(fn func(ctx context.Context, r *domain.Run)) worker.Runner {
	return func(ctx context.Context, r *domain.Run) error {
		c.mu.Lock()
		c.running++
		c.most = max(c.most, c.running)
		c.seen[r.ID]++
		c.mu.Unlock()
		fn(ctx, r)
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
		return nil
	}
}

func (c *countingRunner) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// trackHeld has q record the most runs claimed and not finished, seen as each claim comes
// back; the runner adds to finished as its runs end.
func trackHeld(q *fakeQueue) (held, finished *atomic.Int32) {
	held, finished = new(atomic.Int32), new(atomic.Int32)
	q.claimed = func(total int) { held.Store(max(held.Load(), int32(total)-finished.Load())) }
	return held, finished
}

// TestFetcherClaimsAheadWhileBusy: when slots free up faster than a claim comes back, the
// worker claims ahead of them, holding more runs than slots, so that runs wait ready for the
// slots; yet no more runs execute at once than there are slots, and each runs once.
func TestFetcherClaimsAheadWhileBusy(t *testing.T) {
	const slots, runs = 4, 200
	q := &fakeQueue{left: runs, latency: 5 * time.Millisecond}
	c := &countingRunner{seen: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held, finished := trackHeld(q)
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: c.run(func(context.Context, *domain.Run) {
			time.Sleep(time.Millisecond)
			finished.Add(1)
		})}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	deadline := time.Now().Add(30 * time.Second)
	for c.count() < runs && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-served
	if got := c.count(); got != runs {
		t.Fatalf("%d of %d runs executed", got, runs)
	}
	if c.most > slots {
		t.Fatalf("%d runs executed at once on %d slots", c.most, slots)
	}
	for id, n := range c.seen {
		if n != 1 {
			t.Fatalf("%s executed %d times", id, n)
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, n := range q.asked {
		if n > 2*slots {
			t.Fatalf("a claim asked for %d runs with %d slots: %v", n, slots, q.asked)
		}
	}
	if h := held.Load(); h <= slots || h > 2*slots {
		t.Fatalf("the worker held at most %d runs with %d slots, want more (claimed ahead) but at most twice as many; claims %v", h, slots, q.asked)
	}
	if len(q.released) != 0 {
		t.Fatalf("runs handed back while slots were taking them: %v", q.released)
	}
}

// TestFetcherHoldsNothingBackForLongRuns: a worker whose slots are busy with long runs never
// holds more runs than it has slots, whether its runs never end or end now and then (another
// worker could start those runs now); when they never end it claims nothing more at all.
func TestFetcherHoldsNothingBackForLongRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		// runFor is how long each run takes; zero: until the worker stops.
		runFor time.Duration
	}{
		{"runs never end", 0},
		// A run ends every 50 ms on average; a claim takes 1 ms: 0.02 runs end during one.
		{"runs end now and then", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const slots = 2
			q := &fakeQueue{left: 100, latency: time.Millisecond}
			c := &countingRunner{seen: map[string]int{}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			held, finished := trackHeld(q)
			w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: time.Hour,
				Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Run: c.run(func(ctx context.Context, _ *domain.Run) {
					if tc.runFor == 0 {
						<-ctx.Done()
						return
					}
					time.Sleep(tc.runFor)
					finished.Add(1)
				})}
			served := make(chan struct{})
			go func() { w.Serve(ctx, 10*time.Millisecond); close(served) }()
			for c.count() < slots {
				time.Sleep(time.Millisecond)
			}
			// Long enough for several cooldowns and claims, were any to be made, and for
			// the runs that end to end a few times.
			time.Sleep(500 * time.Millisecond)
			q.mu.Lock()
			asked, granted := append([]int(nil), q.asked...), append([]int(nil), q.granted...)
			q.mu.Unlock()
			cancel()
			<-served
			if h := held.Load(); h > slots {
				t.Fatalf("the worker held %d runs with %d slots busy with long runs; claims asked %v", h, slots, asked)
			}
			if tc.runFor == 0 && (len(asked) != 1 || asked[0] != slots || granted[0] != slots) {
				t.Fatalf("claims asked %v, granted %v with every slot busy; want one claim of %d", asked, granted, slots)
			}
		})
	}
}

// TestReadyRunsNotStartedAreHandedBack: a run claimed ahead for a slot that then stays busy
// is handed back within its lease instead of waiting for the slot, is never executed by this
// worker afterwards, and the worker does not claim ahead again for slots that stay busy.
func TestReadyRunsNotStartedAreHandedBack(t *testing.T) {
	const ttl = 200 * time.Millisecond
	q := &fakeQueue{left: 1000, latency: 10 * time.Millisecond}
	c := &countingRunner{seen: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var quick atomic.Int32
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: ttl, Concurrency: 1, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: c.run(func(ctx context.Context, _ *domain.Run) {
			// The first runs are quick, so that the slot frees up during claims and the
			// worker claims ahead; then the first run to start while the worker holds a run
			// it has not started holds the slot until the worker stops. (The reserve is
			// learned from timing, so it may be none at any given run.)
			if n := quick.Add(1); n <= 20 || q.total() <= int(n) {
				return
			}
			<-ctx.Done()
		})}
	served := make(chan struct{})
	go func() { w.Serve(ctx, 10*time.Millisecond); close(served) }()
	deadline := time.Now().Add(10 * time.Second)
	var released []string
	for len(released) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		q.mu.Lock()
		released = append([]string(nil), q.released...)
		q.mu.Unlock()
	}
	if len(released) == 0 {
		t.Fatalf("no ready run was handed back while the only slot stayed busy (claims %v)", q.asked)
	}
	q.mu.Lock()
	claims := len(q.asked)
	q.mu.Unlock()
	time.Sleep(3 * ttl)
	q.mu.Lock()
	later := q.asked[claims:]
	handedBack := append([]string(nil), q.released...)
	reasons := append([]string(nil), q.reasons...)
	q.mu.Unlock()
	for _, why := range reasons {
		if !strings.Contains(why, "handed back before it started by w") || !strings.Contains(why, "no slot freed up") {
			t.Fatalf("hand-back recorded as %q: the run's events must say who handed it back and why", why)
		}
	}
	cancel()
	<-served
	if len(later) != 0 {
		t.Fatalf("claims %v after a hand-back while the only slot stayed busy", later)
	}
	for _, id := range handedBack {
		if n := c.seen[id]; n != 0 {
			t.Fatalf("run %s was handed back and then executed %d times here", id, n)
		}
	}
	for id, n := range c.seen {
		if n != 1 {
			t.Fatalf("%s executed %d times", id, n)
		}
	}
}

// TestSlotStartsNextRunWhileLastSettles: a run that says it is settled (nothing left but its
// final write) lets its slot start the next run; the slot then waits for that write before it
// frees up again (one run executing and one settling per slot), and Serve returns only after
// every settling run returned.
func TestSlotStartsNextRunWhileLastSettles(t *testing.T) {
	q := &fakeQueue{left: 3}
	started := make(chan string, 3)
	finish := map[string]chan struct{}{"run-1": make(chan struct{}), "run-2": make(chan struct{}), "run-3": make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 1, Poll: 10 * time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: func(ctx context.Context, r *domain.Run) error {
			started <- r.ID
			worker.Settled(ctx)()
			worker.Settled(ctx)() // a second call changes nothing
			<-finish[r.ID]
			return nil
		}}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Minute); close(served) }()
	next := func(want string) {
		t.Helper()
		select {
		case id := <-started:
			if id != want {
				t.Fatalf("started %s, want %s", id, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not start", want)
		}
	}
	nothing := func(why string) {
		t.Helper()
		select {
		case id := <-started:
			t.Fatalf("%s started %s", why, id)
		case <-time.After(100 * time.Millisecond):
		}
	}
	next("run-1")
	next("run-2") // run-1 settled: its slot took the next run
	nothing("with run-1 still settling and run-2 settled, the slot")
	close(finish["run-1"])
	next("run-3")
	cancel()
	close(finish["run-3"])
	select {
	case <-served:
		t.Fatal("Serve returned while run-2 was still settling")
	case <-time.After(100 * time.Millisecond):
	}
	close(finish["run-2"])
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after every run returned")
	}
}

// TestStopWithRunsReady: a worker told to stop while it holds runs claimed ahead of its
// slots (every slot busy) still returns from Serve, whether its runs finish within the drain
// or are cancelled at its end; the runs that no slot was free for are handed back rather than
// kept for the slots, and no run is both handed back and executed.
func TestStopWithRunsReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drain time.Duration
		// finish lets the runs in flight end on their own within the drain.
		finish bool
	}{
		{"runs finish within the drain", time.Minute, true},
		{"drain timeout cancels the runs", 50 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const slots = 2
			q := &fakeQueue{left: 1000, latency: 2 * time.Millisecond}
			c := &countingRunner{seen: map[string]int{}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gate := make(chan struct{})
			var started, blocked atomic.Int32
			w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: slots, Poll: time.Hour,
				Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
				Run: c.run(func(ctx context.Context, _ *domain.Run) {
					// Quick runs, so that the worker claims ahead, until one starts while the
					// worker holds a run it has not started: that run holds its slot until
					// the gate opens or the drain ends.
					n := started.Add(1)
					if q.total() <= int(n) {
						time.Sleep(100 * time.Microsecond)
						return
					}
					blocked.Add(1)
					select {
					case <-gate:
					case <-ctx.Done():
					}
				})}
			served := make(chan struct{})
			go func() { w.Serve(ctx, tc.drain); close(served) }()
			// Wait until every slot is busy and the worker holds more runs than it executes.
			deadline := time.Now().Add(10 * time.Second)
			for {
				if blocked.Load() == slots && q.total() > int(started.Load()) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the worker never held a run ready with every slot busy (claims %v)", q.asked)
				}
				time.Sleep(time.Millisecond)
			}
			cancel()
			// The runs that no slot is free for are handed back while the slots are busy.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				q.mu.Lock()
				n := len(q.released)
				q.mu.Unlock()
				if n > 0 {
					break
				}
			}
			if tc.finish {
				close(gate)
			}
			select {
			case <-served:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after a stop with runs ready and every slot busy")
			}
			q.mu.Lock()
			defer q.mu.Unlock()
			granted := 0
			for _, n := range q.granted {
				granted += n
			}
			if len(q.released) == 0 {
				t.Fatalf("no run handed back at the stop (granted %d, executed %d)", granted, c.count())
			}
			for _, why := range q.reasons {
				if !strings.Contains(why, "which is stopping") {
					t.Fatalf("hand-back at the stop recorded as %q", why)
				}
			}
			for _, id := range q.released {
				if c.seen[id] != 0 {
					t.Fatalf("%s was handed back and executed", id)
				}
			}
			if got := c.count() + len(q.released); got != granted {
				t.Fatalf("%d runs claimed, %d executed and %d handed back", granted, c.count(), len(q.released))
			}
		})
	}
}

// leaseQueue is a fakeQueue that remembers each run's lease and the hand-backs that came
// after it ran out.
type leaseQueue struct {
	fakeQueue
	leases map[string]time.Time
	late   []string
}

func (q *leaseQueue) ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error) {
	runs, err := q.fakeQueue.ClaimBatch(ctx, owner, until, f, n)
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range runs {
		q.leases[r.ID] = until
	}
	return runs, err
}

func (q *leaseQueue) HandBack(ctx context.Context, runID, owner, reason string) error {
	q.mu.Lock()
	if !time.Now().Before(q.leases[runID]) {
		q.late = append(q.late, runID)
	}
	q.mu.Unlock()
	return q.fakeQueue.HandBack(ctx, runID, owner, reason)
}

func (q *leaseQueue) lease(runID string) time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.leases[runID]
}

// TestReadyRunsWithinTheirLease: with claims that take half the lease (a loaded database, or
// a short --lease-ttl), a run kept ready is handed back while its lease still runs (after it,
// the run may be another claim's, even this worker's), and every run starts with at least a
// third of its lease left, since the engine renews it first a third of the TTL after the
// start.
func TestReadyRunsWithinTheirLease(t *testing.T) {
	const ttl = 200 * time.Millisecond
	q := &leaseQueue{fakeQueue: fakeQueue{left: 1000, latency: ttl / 2}, leases: map[string]time.Time{}}
	c := &countingRunner{seen: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var short []string
	var started atomic.Int32
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: ttl, Concurrency: 1, Poll: time.Hour,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Run: c.run(func(ctx context.Context, r *domain.Run) {
			if left := time.Until(q.lease(r.ID)); left < ttl/3 {
				mu.Lock()
				short = append(short, fmt.Sprintf("%s (%s left)", r.ID, left.Round(time.Millisecond)))
				mu.Unlock()
			}
			// A run that starts while the worker holds a run it has not started keeps the
			// slot for a while, so that the held run waits; the others are quick.
			if n := started.Add(1); q.total() > int(n) {
				time.Sleep(ttl * 3 / 5)
			}
		})}
	served := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(served) }()
	time.Sleep(4 * time.Second)
	cancel()
	<-served
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.late) > 0 {
		t.Errorf("%d of %d hand-backs came after the lease ran out: %v", len(q.late), len(q.released), q.late)
	}
	if len(short) > 0 {
		t.Errorf("%d of %d runs started with less than a third of their lease left: %v", len(short), c.count(), short)
	}
	for _, id := range q.released {
		if c.seen[id] != 0 {
			t.Errorf("%s was handed back and executed", id)
		}
	}
	granted := 0
	for _, n := range q.granted {
		granted += n
	}
	if c.count()+len(q.released) != granted {
		t.Errorf("%d runs claimed, %d executed and %d handed back", granted, c.count(), len(q.released))
	}
	t.Logf("%d claims, %d runs executed, %d handed back", len(q.asked), c.count(), len(q.released))
}
