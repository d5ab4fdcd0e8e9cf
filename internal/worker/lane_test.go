package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/hostlane"
	"github.com/pipectl/pipectl/internal/worker"
)

// laneBook records which workers hold a host lane, through trackedLanes.
type laneBook struct {
	mu      sync.Mutex
	holders map[string]bool
	most    int
}

func (b *laneBook) set(owner string, held bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holders == nil {
		b.holders = map[string]bool{}
	}
	b.holders[owner] = held
	n := 0
	for _, h := range b.holders {
		if h {
			n++
		}
	}
	b.most = max(b.most, n)
}

func (b *laneBook) holds(owner string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.holders[owner]
}

// trackedLanes are real host lanes that tell book who holds one.
type trackedLanes struct {
	*hostlane.Lanes
	owner string
	book  *laneBook
}

func (l trackedLanes) track(release func()) func() {
	l.book.set(l.owner, true)
	return func() {
		l.book.set(l.owner, false)
		release()
	}
}

func (l trackedLanes) TryTake() (func(), bool, error) {
	release, ok, err := l.Lanes.TryTake()
	if ok {
		release = l.track(release)
	}
	return release, ok, err
}

func (l trackedLanes) Wait(ctx context.Context) (func(), bool, error) {
	release, stalled, err := l.Lanes.Wait(ctx)
	if err == nil && !stalled {
		release = l.track(release)
	}
	return release, stalled, err
}

// laneQueue is a finishingQueue that counts the claims each owner made back to back (asking
// to finish more runs than it has slots for, right after a claim of its that finished every
// run it took and found as many as it asked for) and those it made so without holding a lane.
type laneQueue struct {
	*finishingQueue
	book        *laneBook
	backToBack  sync.Map // owner -> *atomic.Int32
	drained     sync.Map // owner -> bool: its last claim back finished all it asked for
	withoutLane atomic.Int32
}

func (q *laneQueue) ClaimFinishing(ctx, stop context.Context, owner string, until time.Time, f domain.ClaimFilter, n, most int,
	finish func(context.Context, *domain.Run) *domain.Finished) ([]*domain.Run, []*domain.Finished, bool, error) {
	if drained, _ := q.drained.Load(owner); most > n && drained == true {
		c, _ := q.backToBack.LoadOrStore(owner, new(atomic.Int32))
		c.(*atomic.Int32).Add(1)
		if !q.book.holds(owner) {
			q.withoutLane.Add(1)
		}
	}
	runs, finished, full, err := q.finishingQueue.ClaimFinishing(ctx, stop, owner, until, f, n, most, finish)
	q.drained.Store(owner, err == nil && full && len(finished) > 0 && len(runs) == 0)
	return runs, finished, full, err
}

func (q *laneQueue) drainedBy(owner string) int32 {
	c, ok := q.backToBack.Load(owner)
	if !ok {
		return 0
	}
	return c.(*atomic.Int32).Load()
}

// pureWorker is a worker whose every run is pure (finished in its claim), counting the runs
// finished in done; its log is written to log.
func pureWorker(q worker.Queue, owner string, lanes worker.Lanes, log *syncWriter, done *atomic.Int32) *worker.Worker {
	return &worker.Worker{
		Queue: q, Owner: owner, LeaseTTL: time.Minute, Concurrency: 4, Poll: 5 * time.Millisecond, Lanes: lanes,
		Metrics: worker.NewMetrics("test"),
		Log:     slog.New(slog.NewTextHandler(log, nil)),
		Run:     func(context.Context, *domain.Run) error { return errors.New("a pure run went to a slot") },
		Finish: func(_ context.Context, r *domain.Run) *domain.Finished {
			time.Sleep(20 * time.Microsecond)
			return &domain.Finished{Run: r, Committed: func() { done.Add(1) }}
		},
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// TestWorkersOfAHostDrainOneAtATime: two workers of one host drain a backlog of pure runs
// with one host lane between them. Every claim made back to back is made by the lane's
// holder, never two hold it at once, the other says in its log that it waits, and when the
// holder stops mid-backlog the other takes the lane and drains the rest.
func TestWorkersOfAHostDrainOneAtATime(t *testing.T) {
	const total = 6000
	book := &laneBook{}
	q := &laneQueue{finishingQueue: &finishingQueue{fakeQueue: &fakeQueue{left: total, latency: 200 * time.Microsecond}}, book: book}
	dir := filepath.Join(t.TempDir(), "lanes")
	lanes := func(owner string) worker.Lanes {
		l := hostlane.New(dir, "ledger", 1)
		l.Every = time.Millisecond
		return trackedLanes{Lanes: l, owner: owner, book: book}
	}
	var done atomic.Int32
	logs := map[string]*syncWriter{"a": {}, "b": {}}
	a := pureWorker(q, "a", lanes("a"), logs["a"], &done)
	b := pureWorker(q, "b", lanes("b"), logs["b"], &done)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	stoppedA, stoppedB := make(chan struct{}), make(chan struct{})
	go func() { a.Serve(ctxA, time.Second); close(stoppedA) }()
	go func() { b.Serve(ctxB, time.Second); close(stoppedB) }()
	defer func() { stopA(); stopB(); <-stoppedA; <-stoppedB }()

	// Both claim once as they start; then one drains and the other waits for the lane.
	waitFor(t, 20*time.Second, func() bool { return q.drainedBy("a")+q.drainedBy("b") >= 5 })
	holder, holderStop, holderStopped := "a", stopA, stoppedA
	if q.drainedBy("b") > q.drainedBy("a") {
		holder, holderStop, holderStopped = "b", stopB, stoppedB
	}
	waiter := map[string]string{"a": "b", "b": "a"}[holder]
	if n := q.drainedBy(waiter); n != 0 {
		t.Fatalf("%s claimed back to back %d times while %s held the lane", waiter, n, holder)
	}
	if !strings.Contains(logs[waiter].String(), "waiting for its lane") {
		t.Fatalf("%s does not say it waits for the lane:\n%s", waiter, logs[waiter].String())
	}
	workers := map[string]*worker.Worker{"a": a, "b": b}
	if w, h := lanesGauge(workers[waiter], "waiting"), lanesGauge(workers[holder], "held"); w != 1 || h != 1 {
		t.Fatalf("pipectl_host_lane: the waiter's waiting %v, the holder's held %v; want 1 and 1", w, h)
	}
	holderStop()
	<-holderStopped
	// What the stopping holder's last claim had not run yet it handed back (this fake queue
	// does not queue it again); the other worker drains all the rest.
	waitFor(t, 20*time.Second, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return int(done.Load())+len(q.released) == total
	})
	if n := q.drainedBy(waiter); n == 0 {
		t.Fatalf("%s never drained after %s stopped", waiter, holder)
	}
	if n := q.withoutLane.Load(); n != 0 {
		t.Fatalf("%d claims were made back to back without a lane", n)
	}
	book.mu.Lock()
	most := book.most
	book.mu.Unlock()
	if most != 1 {
		t.Fatalf("%d workers held the one lane at once", most)
	}
}

// lanesGauge reads pipectl_host_lane{state} as the worker's metrics endpoint would.
func lanesGauge(w *worker.Worker, state string) float64 {
	families, _ := w.Metrics.Registry.Gather()
	for _, f := range families {
		if f.GetName() != "pipectl_host_lane" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" && l.GetValue() == state {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// failingLanes cannot be taken: a lane file that cannot be opened.
type failingLanes struct{}

func (failingLanes) TryTake() (func(), bool, error) {
	return nil, false, errors.New("permission denied")
}
func (failingLanes) Wait(context.Context) (func(), bool, error) {
	return nil, false, errors.New("permission denied")
}

// TestWorkerDrainsWithoutLanesItCannotTake: lanes that fail are logged once and left aside;
// the worker drains as it would without them.
func TestWorkerDrainsWithoutLanesItCannotTake(t *testing.T) {
	const total = 500
	q := &finishingQueue{fakeQueue: &fakeQueue{left: total}}
	var done atomic.Int32
	log := &syncWriter{}
	w := pureWorker(q, "w", failingLanes{}, log, &done)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	waitFor(t, 20*time.Second, func() bool { return int(done.Load()) == total })
	if n := strings.Count(log.String(), "host lanes unavailable"); n != 1 {
		t.Fatalf("the failing lanes were logged %d times, want once:\n%s", n, log.String())
	}
}

// TestWorkerLeavesTheLaneOnceDrained: a worker holds its lane only while it drains. Once the
// queue is empty it lets the lane go while it keeps running, for a worker of other runs (or a
// later backlog) to take.
func TestWorkerLeavesTheLaneOnceDrained(t *testing.T) {
	const total = 500
	book := &laneBook{}
	q := &laneQueue{finishingQueue: &finishingQueue{fakeQueue: &fakeQueue{left: total}}, book: book}
	var done atomic.Int32
	w := pureWorker(q, "w", trackedLanes{Lanes: hostlane.New(filepath.Join(t.TempDir(), "lanes"), "ledger", 1), owner: "w", book: book}, &syncWriter{}, &done)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	waitFor(t, 20*time.Second, func() bool { return int(done.Load()) == total })
	if q.drainedBy("w") == 0 {
		t.Fatal("the worker never drained back to back, so it never needed the lane")
	}
	waitFor(t, 20*time.Second, func() bool { return !book.holds("w") })
	book.mu.Lock()
	most := book.most
	book.mu.Unlock()
	if most != 1 || q.withoutLane.Load() != 0 {
		t.Fatalf("the lane was held by %d at most, and %d claims went without it", most, q.withoutLane.Load())
	}
	// The gauge follows the release, on the fetcher's goroutine.
	waitFor(t, 20*time.Second, func() bool { return lanesGauge(w, "held") == 0 })
}

// scriptedQueue answers each worker's claims from a script, by owner and call number.
type scriptedQueue struct {
	*fakeQueue
	mu     sync.Mutex
	calls  map[string]int
	script func(owner string, call int) ([]*domain.Run, []*domain.Finished, bool)
}

func (q *scriptedQueue) ClaimFinishing(_, _ context.Context, owner string, _ time.Time, _ domain.ClaimFilter, n, most int,
	_ func(context.Context, *domain.Run) *domain.Finished) ([]*domain.Run, []*domain.Finished, bool, error) {
	q.mu.Lock()
	if q.calls == nil {
		q.calls = map[string]int{}
	}
	q.calls[owner]++
	call := q.calls[owner]
	q.mu.Unlock()
	runs, finished, full := q.script(owner, call)
	return runs, finished, full, nil
}

func (q *scriptedQueue) callsBy(owner string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.calls[owner]
}

// TestAHolderWithBusySlotsLetsTheLaneGo (found by a review): a draining worker whose two claims
// come back one with a run for its only slot, the other with every run finished, is left
// draining with no slot to claim for. It must let the lane go: kept while its slot is busy
// (hours, for a long run), it stopped the host's other worker from claiming at all.
func TestAHolderWithBusySlotsLetsTheLaneGo(t *testing.T) {
	slotBusy := make(chan struct{})
	var once sync.Once
	q := &scriptedQueue{fakeQueue: &fakeQueue{}}
	var id atomic.Int64
	run := func() *domain.Run {
		return &domain.Run{ID: fmt.Sprint("run-", id.Add(1)), State: domain.StateProcessing}
	}
	finished := func() []*domain.Finished { return []*domain.Finished{{Run: run()}} }
	q.script = func(owner string, call int) ([]*domain.Run, []*domain.Finished, bool) {
		if owner == "a" {
			switch call {
			case 1:
				return nil, finished(), true // a drains
			case 2:
				return []*domain.Run{run()}, nil, true // a run for its only slot
			case 3:
				<-slotBusy
				return nil, finished(), true // back after call 2 was handed out
			}
			return []*domain.Run{run()}, nil, true
		}
		if call == 1 {
			return nil, finished(), true // b drains too
		}
		return []*domain.Run{run()}, nil, true
	}
	book := &laneBook{}
	dir := filepath.Join(t.TempDir(), "lanes")
	newWorker := func(owner string) *worker.Worker {
		l := hostlane.New(dir, "ledger", 1)
		l.Every = time.Millisecond
		return &worker.Worker{Queue: q, Owner: owner, LeaseTTL: time.Minute, Concurrency: 1, Poll: 10 * time.Millisecond,
			Lanes: trackedLanes{Lanes: l, owner: owner, book: book}, Log: slog.New(slog.NewTextHandler(&syncWriter{}, nil)),
			Run: func(ctx context.Context, r *domain.Run) error {
				if owner == "a" {
					once.Do(func() { close(slotBusy) })
				}
				<-ctx.Done() // a long run
				return ctx.Err()
			},
			Finish: func(context.Context, *domain.Run) *domain.Finished { return nil }}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var served sync.WaitGroup
	defer func() { cancel(); served.Wait() }()
	serve := func(w *worker.Worker) {
		served.Add(1)
		go func() { defer served.Done(); w.Serve(ctx, 10*time.Millisecond) }()
	}
	serve(newWorker("a"))
	waitFor(t, 5*time.Second, func() bool { return q.callsBy("a") >= 3 })
	time.Sleep(50 * time.Millisecond)
	serve(newWorker("b"))
	waitFor(t, 5*time.Second, func() bool { return q.callsBy("b") >= 1 })
	for deadline := time.Now().Add(2 * time.Second); q.callsBy("b") < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("b claimed nothing for 2s while a, unable to claim, held the lane (a holds: %v)", book.holds("a"))
		}
	}
}

// stalledLanes are all held by a frozen process: Wait gives up on it at once.
type stalledLanes struct{ waits *atomic.Int32 }

func (stalledLanes) TryTake() (func(), bool, error) { return nil, false, nil }
func (l stalledLanes) Wait(context.Context) (func(), bool, error) {
	l.waits.Add(1)
	return func() {}, true, nil
}

// TestWorkerDrainsPastAFrozenHolder: when the lanes' holder shows no sign of life, the worker
// drains without a lane rather than wait for a process that may never run again, and says so
// once at Warn.
func TestWorkerDrainsPastAFrozenHolder(t *testing.T) {
	const total = 500
	q := &laneQueue{finishingQueue: &finishingQueue{fakeQueue: &fakeQueue{left: total}}, book: &laneBook{}}
	var done, waits atomic.Int32
	log := &syncWriter{}
	w := pureWorker(q, "w", stalledLanes{&waits}, log, &done)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	waitFor(t, 20*time.Second, func() bool { return int(done.Load()) == total })
	if q.drainedBy("w") == 0 || waits.Load() == 0 {
		t.Fatalf("drained back to back %d times after %d waits; want both", q.drainedBy("w"), waits.Load())
	}
	if n := strings.Count(log.String(), "level=WARN msg=\"the holder of this host's lane has shown no sign of life"); n != 1 {
		t.Fatalf("the frozen holder was told %d times at Warn, want once:\n%s", n, log.String())
	}
}

// TestAFrozenHolderCostsStaleOnce (found by a review): a holder frozen for good (its lane
// touched once, long ago) costs the host's other worker the wait of Stale once, not before
// each of its drains: with claims of a millisecond and a poll of 5 ms it claims hundreds of
// times in five Stales, against a few dozen when each drain waited Stale.
func TestAFrozenHolderCostsStaleOnce(t *testing.T) {
	const stale = 200 * time.Millisecond
	dir := filepath.Join(t.TempDir(), "lanes")
	frozen := hostlane.New(dir, "ledger", 1)
	frozen.Stale = time.Hour // it touches its lane as it takes it, then not for 15 minutes
	release, ok, err := frozen.TryTake()
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer release()
	var mu sync.Mutex
	var at []time.Time
	q := &scriptedQueue{fakeQueue: &fakeQueue{}}
	q.script = func(owner string, call int) ([]*domain.Run, []*domain.Finished, bool) {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		time.Sleep(time.Millisecond)
		if call%2 == 1 {
			return nil, []*domain.Finished{{Run: &domain.Run{ID: fmt.Sprint("pure-", call)}}}, true // a drain begins
		}
		return nil, nil, false // and ends
	}
	lanes := hostlane.New(dir, "ledger", 1)
	lanes.Stale, lanes.Every = stale, time.Millisecond
	w := &worker.Worker{Queue: q, Owner: "w", LeaseTTL: time.Minute, Concurrency: 4, Poll: 5 * time.Millisecond,
		Lanes: lanes, Log: slog.New(slog.NewTextHandler(&syncWriter{}, nil)),
		Run:    func(context.Context, *domain.Run) error { return nil },
		Finish: func(context.Context, *domain.Run) *domain.Finished { return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { w.Serve(ctx, time.Second); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	waitFor(t, 5*time.Second, func() bool { return q.callsBy("w") >= 3 }) // the holder found frozen once
	mu.Lock()
	from := len(at)
	mu.Unlock()
	time.Sleep(5 * stale)
	mu.Lock()
	claims := len(at) - from
	mu.Unlock()
	if claims < 150 {
		t.Fatalf("%d claims in %v (each a millisecond, a poll every 5 ms): the worker waited Stale for the frozen holder before each drain", claims, 5*stale)
	}
}
