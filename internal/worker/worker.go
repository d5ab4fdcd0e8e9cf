// Package worker claims due runs from a shared ledger and executes them; workers hold no state of their own.
package worker

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Queue is the part of the ledger a worker takes work from. Implementations must make a claim
// exclusive across processes and machines.
type Queue interface {
	// ClaimBatch claims up to n due runs for owner, oldest first, in one transaction. The runs
	// it returns with an error are claimed all the same.
	ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error)
	QueueDepth(ctx context.Context) (int, error)
	// PausedRuns counts runs in needs_review and waiting_external.
	PausedRuns(ctx context.Context) (map[domain.RunState]int, error)
	// ExpireWaits dead-letters runs whose wait deadline passed.
	ExpireWaits(ctx context.Context, actor string) (int, error)
	// HandBack hands a claimed run that was not started back: its lease runs out now, for
	// any worker to take, and the run's events say why.
	HandBack(ctx context.Context, runID, owner, reason string) error
}

// FinishingQueue is a Queue whose claims can run a fresh run of pure steps to its end before
// they commit, and write it in their own transaction (ledger.ClaimFinishing). finish says what
// to write for a run, or nil to claim it as usual.
// It takes up to most runs in all, no more than n of them unfinished; full says more may be
// due.
type FinishingQueue interface {
	Queue
	ClaimFinishing(ctx, stop context.Context, owner string, until time.Time, f domain.ClaimFilter, n, most int,
		finish func(context.Context, *domain.Run) *domain.Finished) (runs []*domain.Run, finished []*domain.Finished, full bool, err error)
}

// Lanes are a few tokens shared by the processes of one host (hostlane.Lanes).
type Lanes interface {
	// TryTake holds a free lane, if one is free now, and returns its release.
	TryTake() (release func(), ok bool, err error)
	// Wait holds the next lane that frees up, or returns ctx's error. stalled says it holds
	// none, since every lane's holder has shown no sign of life for long (a frozen process):
	// the caller goes on as if it held one.
	Wait(ctx context.Context) (release func(), stalled bool, err error)
}

// Runner executes a run this worker has claimed, until it ends, pauses or ctx ends.
type Runner func(ctx context.Context, run *domain.Run) error

// Worker runs Concurrency slots, each executing one run at a time. One fetcher claims for
// every free slot at once and hands the runs out, so that a busy queue costs one claim
// transaction per batch rather than one per run.
type Worker struct {
	Queue       Queue
	Run         Runner
	Owner       string
	LeaseTTL    time.Duration
	Concurrency int
	Filter      domain.ClaimFilter
	// Poll is the fallback interval when no notification arrives.
	Poll time.Duration
	// FetchCooldown is how long the fetcher lets free slots gather after a full batch, while
	// more runs are due, before it claims again: batches stay large when runs end one by one.
	// Zero means 2 ms.
	FetchCooldown time.Duration
	// Finish, when set and Queue is a FinishingQueue, runs a fresh run of pure steps inside
	// the claim that takes it (engine.Finish): see claim.
	Finish func(context.Context, *domain.Run) *domain.Finished
	// Lanes, when set, are shared by the workers of this host that drain the same queue
	// (hostlane.Lanes): a worker runs claims back to back that finish every run they take
	// (see fetch) only while it holds one, and waits for one otherwise.
	Lanes Lanes
	// Wake fires when a run is queued (nil: poll only).
	Wake    <-chan struct{}
	Log     *slog.Logger
	Metrics *Metrics
}

// Serve claims and executes runs until ctx ends, then drains: runs in flight get up to drain
// to finish; after that they are cancelled, and the engine hands their leases back so that
// another worker resumes them at once.
func (w *Worker) Serve(ctx context.Context, drain time.Duration) error {
	if w.Concurrency < 1 {
		w.Concurrency = 1
	}
	if w.Poll <= 0 {
		w.Poll = time.Second
	}
	if w.FetchCooldown <= 0 {
		w.FetchCooldown = 2 * time.Millisecond
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	runs := make(chan *domain.Run)
	free := make(chan struct{}, w.Concurrency)
	go w.housekeeping(ctx)
	var wg sync.WaitGroup
	for range w.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.slot(work, runs, free)
		}()
	}
	go func() {
		defer close(runs)
		w.fetch(ctx, runs, free)
	}()
	<-ctx.Done()
	w.Log.Info("draining", "owner", w.Owner, "drain_timeout", drain.String())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		w.Log.Warn("drain timeout: cancelling runs in flight; their leases are handed back", "owner", w.Owner)
		cancelWork()
		<-done
	}
	return nil
}

// reserveFor is how many claimed runs to keep ready: as many as the slots finish during one
// claim's round trip (took), at the rate they finished lately (frees in over), rounded to the
// nearest and at most most. Slots that finish less than one run in two round trips hold
// nothing back: a run kept for them would wait for a slot while another worker could start it.
// Nor does a claim that took a quarter of the lease (ttl) or more: what it kept ready would
// have used up half its lease, and be handed back, before a slot could take it.
func reserveFor(frees int, over, took, ttl time.Duration, most int) int {
	if frees <= 0 || over <= 0 || took <= 0 || took >= ttl/4 {
		return 0
	}
	x := float64(frees) * took.Seconds() / over.Seconds()
	if x >= float64(most) {
		return most
	}
	return int(math.Round(x))
}

// finishingClaim is how many runs per slot a claim may take while the claims finish every run
// they take: such a claim costs the ledger a begin and a commit however many runs it finishes,
// and uses no slot for them (docs/scaling.md, the tenth pass, has the figures). It locks them
// as many as there are free slots at a time, and the next ones only once it finished those.
const finishingClaim = 4

// claim takes up to n due runs for slots until the lease's end; full says it found as many as it
// looked for, so that more may be due. With Finish, the runs of pure steps it takes fresh are
// run to their end within the claim, one after another on this goroutine, up to most runs in
// all: since a claim executes one run at a time, no more runs execute at once than
// Concurrency, plus one per claim in flight, however many it takes. They are counted in
// finished; what is told of them (their log lines, metrics) is told once they committed.
//
// A claim goes on when the worker is told to stop (ctx is not stop), so that what it claimed is
// not stranded, but from then on it starts and locks no run, and the run it is executing is
// stopped between two steps: those runs are claimed, and cut says the fetcher is to hand them
// back.
func (w *Worker) claim(ctx, stop context.Context, until time.Time, n, most int) (runs []*domain.Run, finished int, full, cut bool, err error) {
	fq, ok := w.Queue.(FinishingQueue)
	if !ok || w.Finish == nil {
		runs, err := w.Queue.ClaimBatch(ctx, w.Owner, until, w.Filter, n)
		return runs, 0, len(runs) == n, false, err
	}
	runs, done, full, err := fq.ClaimFinishing(ctx, stop, w.Owner, until, w.Filter, n, most, w.Finish)
	for _, f := range done {
		if f.Committed != nil {
			f.Committed()
		}
	}
	return runs, len(done), full, stop.Err() != nil, err
}

// housekeeping expires overdue waits and samples the queue depth.
func (w *Worker) housekeeping(ctx context.Context) {
	t := time.NewTicker(max(w.Poll, time.Second))
	defer t.Stop()
	var gauges gaugeSpacing
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := w.Queue.ExpireWaits(ctx, "worker "+w.Owner); err == nil && n > 0 {
				w.Log.Info("waits timed out", "runs", n)
			}
			if w.Metrics == nil || !gauges.due(time.Now()) {
				continue
			}
			began := time.Now()
			if d, err := w.Queue.QueueDepth(ctx); err == nil {
				w.Metrics.QueueDepth.Set(float64(d))
			}
			if counts, err := w.Queue.PausedRuns(ctx); err == nil {
				w.Metrics.setPaused(counts)
			}
			gauges.took(began, time.Since(began))
		}
	}
}

// gaugeCostShare bounds what the gauges' counts cost each worker: a worker counts again only
// once gaugeCostShare times as long as its counts take went by, or gaugeStaleness, whichever is
// sooner. Counting the queue reads every queued run: on PostgreSQL, a count of 200,000 queued
// took 58 ms (a parallel count, in three processes), and every worker counted every second,
// so a fleet behind a large backlog spent more of the server counting the queue than claiming
// it. Behind such a backlog the gauge is now a few seconds old instead (the backlog takes
// minutes to drain anyway); a queue counted in under 10 ms is still counted at every tick of a
// second, and every worker counts at least every gaugeStaleness, so that an alert on the
// gauge still fires.
const (
	gaugeCostShare = 100
	gaugeStaleness = 2 * time.Minute
)

// gaugeSpacing says when the gauges are due again (see gaugeCostShare).
type gaugeSpacing struct {
	next time.Time
	last time.Duration // how long the count before took; 0 before the first
}

func (g *gaugeSpacing) due(now time.Time) bool { return !now.Before(g.next) }

// took records a count that began at began and took d. The spacing goes by the quicker of the
// last two counts: one count slowed by the server or the network (a lock, a checkpoint) does
// not leave the gauge minutes old, while a queue that is slow to count every time is counted
// less often from its second count on. The first count, having none before it, goes by its own.
func (g *gaugeSpacing) took(began time.Time, d time.Duration) {
	cost := d
	if g.last > 0 {
		cost = min(d, g.last)
	}
	g.last = max(d, time.Nanosecond)
	g.next = began.Add(min(cost*gaugeCostShare, gaugeStaleness))
}

// slot executes the runs the fetcher hands it, one at a time, and says when it is free: when
// its run returns, or earlier, when the run says it is settled (see Settled). A slot then
// starts its next run while the last one's final write commits, but waits for that write
// before it frees up again: a slot holds at most one run executing and one settling.
//
// The runs execute on two goroutines of the slot's own, taken in turn, rather than on a new
// goroutine each: a new one starts on a small stack, and a run's calls (the engine, the ledger's
// driver, the logger) grew it by copying at every run, a tenth of a busy worker's CPU. Two are
// enough: when a run is handed over, the run before the last has ended.
func (w *Worker) slot(work context.Context, runs <-chan *domain.Run, free chan<- struct{}) {
	jobs := make(chan func())
	defer close(jobs)
	for range 2 {
		go func() {
			for job := range jobs {
				job()
			}
		}()
	}
	free <- struct{}{}
	var settling chan struct{}
	for run := range runs {
		// At Debug: the claim is in the ledger (the run's processing event names this worker),
		// and the line when the run leaves the worker says the rest; two Info lines per run cost
		// a busy worker a tenth of its CPU.
		w.Log.Debug("claimed run", "run_id", run.ID, "pipeline", run.Pipeline, "idempotency_key", run.IdempotencyKey)
		released, done := make(chan struct{}), make(chan struct{})
		var once sync.Once
		release := func() { once.Do(func() { close(released) }) }
		jobs <- func() {
			defer close(done)
			defer release()
			if err := w.Run(context.WithValue(work, settledKey{}, release), run); err != nil && !errors.Is(err, context.Canceled) {
				w.Log.Info("run left the worker", "run_id", run.ID, "pipeline", run.Pipeline, "reason", err.Error())
			}
		}
		<-released
		if settling != nil {
			<-settling
		}
		settling = done
		free <- struct{}{}
	}
	if settling != nil {
		<-settling
	}
}

type settledKey struct{}

// Settled returns the function a Runner calls when its run has nothing left to execute but
// the write of its final transition: the slot may start another run meanwhile. It does
// nothing outside a worker, and after the first call.
func Settled(ctx context.Context) func() {
	if f, ok := ctx.Value(settledKey{}).(func()); ok {
		return f
	}
	return func() {}
}

// fetch claims runs for the free slots until ctx ends. It claims for all free slots at once,
// then again while claims come back full (more is due), else when a notification arrives or
// the poll interval passes. Up to two claims are in flight at once, each for the slots that
// were free when it started: while one waits for the database, slots that free up meanwhile
// are claimed for by the next.
//
// While the queue is busy it also keeps a reserve of claimed runs ready, so that a slot that
// frees up starts its next run at once instead of idling for a claim's round trip. Its size is
// learned, not set: as many runs as the slots finished during one claim's round trip at the
// rate they finished since the claim before (rounded to the nearest, never more than there
// are slots), so that a worker of long runs, whose slots seldom free up, holds nothing back.
// A ready run is started only within the first half of its lease (counted from when its claim
// asked for it) and otherwise handed back for any worker to take, at most three quarters of
// its lease after the claim. Slots still bound what executes: at most Concurrency runs at once.
//
// When ctx ends, the runs claimed go to the slots that are free; the rest are handed back at
// once instead of waiting for a slot through the drain. With Finish, what a claim still in
// flight then takes is handed back too (claim's cut), whichever way the ledger claimed it.
func (w *Worker) fetch(ctx context.Context, runs chan<- *domain.Run, free <-chan struct{}) {
	const maxInflight = 2
	type result struct {
		asked int
		runs  []*domain.Run
		// finished counts the runs the claim ran to their end itself; cut says the stop came
		// while it ran them, and it left the rest (runs) unstarted. full says it found as many
		// runs as it looked for.
		finished  int
		full, cut bool
		err       error
		took      time.Duration
		// start is when the claim asked for its lease: the lease runs until start+LeaseTTL.
		start time.Time
	}
	type readyRun struct {
		run *domain.Run
		// leased is when the claim asked for the run's lease (its start), not when it
		// came back: a slow claim eats into the lease.
		leased time.Time
	}
	results := make(chan result, maxInflight)
	// A claim in flight finishes even when ctx ends, so that what it claimed is not stranded.
	claimCtx := context.WithoutCancel(ctx)
	var ready []readyRun
	slots, inflight, asked, due := 0, 0, 0, true
	// frees counts the slots freed by a run since the first claim came back, when the rate
	// they free up at is measured from; reserve is how many runs are kept ready beyond them.
	frees, reserve := 0, 0
	var measured time.Time
	measuredFrees := 0
	poll := time.NewTimer(w.Poll)
	defer poll.Stop()
	staleCheck := time.NewTicker(max(w.LeaseTTL/4, 10*time.Millisecond))
	defer staleCheck.Stop()
	// cool is armed while free slots gather before the next claim of a busy queue. The first
	// claim waits for every slot to report instead (they all do at once), so that it asks for
	// all of them however slowly their goroutines start.
	cool := time.NewTimer(w.FetchCooldown)
	cooling, starting := true, true
	// finishing is set while claims run every run they take themselves (claim): two of them
	// are then in flight at once, so that one runs its runs while the other waits for the
	// database, and neither waits for a cooldown.
	finishing := false
	// backToBack is set while the last claim back ran every run it took and found as many as
	// it asked for (finishing is then set too): the next one drains a backlog, and needs a
	// lane of the host (Lanes). The first claim after a poll or a wake-up needs none.
	backToBack := false
	defer cool.Stop()
	// A worker drains back to back only with a lane of its host: one already keeps the cores
	// busy that way, and a second beside it would only add its own work per run.
	laneCtx, stopLane := context.WithCancel(ctx)
	lane := newLaneHolder(w.Lanes, w.Log, w.Metrics, w.Owner)
	defer lane.drop()
	defer stopLane()
	// release hands a ready run back: its lease ends now, for any worker to take.
	release := func(r readyRun, why string) {
		// Bounded: a hung ledger must not stall the fetcher (or a stop) for good; a run not
		// handed back is taken over when its lease runs out.
		rctx, cancel := context.WithTimeout(claimCtx, max(w.LeaseTTL/4, time.Second))
		defer cancel()
		if err := w.Queue.HandBack(rctx, r.run.ID, w.Owner, why); err != nil {
			w.Log.Warn("handing back a run not started", "run_id", r.run.ID, "error", err)
		}
	}
	handOut := func(r result) {
		inflight--
		asked -= r.asked
		if w.Metrics != nil && (r.err == nil || len(r.runs) > 0) {
			w.Metrics.ClaimSeconds.Observe(r.took.Seconds())
		}
		now := time.Now()
		if r.cut {
			// A claim the stop cut short: what it did not run goes to another worker at once
			// rather than starting here, from its first step, while this one stops.
			for _, run := range r.runs {
				release(readyRun{run, r.start}, "handed back before it started by "+w.Owner+", which is stopping")
			}
			r.runs = nil
		}
		// A free slot starts its run at once, however long the claim took (the engine
		// renews the lease first when it must); the rest wait ready, within half their lease.
		for _, run := range r.runs {
			if slots > 0 {
				runs <- run
				slots--
				continue
			}
			ready = append(ready, readyRun{run, r.start})
		}
		switch {
		case r.err != nil:
			if ctx.Err() == nil {
				w.Log.Warn("claim failed", "error", r.err, "runs_claimed_anyway", len(r.runs))
			}
			due, reserve, backToBack = false, 0, false
		case r.full && r.finished > 0 && len(r.runs) == 0:
			// The claim ran every run itself: no slot was used, so there is nothing to let
			// gather, and the next claim goes at once.
			due, finishing, backToBack = true, true, true
		case r.full:
			due, cooling, finishing, backToBack = true, true, false, false
			cool.Reset(w.FetchCooldown)
			// The rate needs time to have passed since the claim before: on a coarse clock two
			// claims may come back at the same instant.
			if measured.IsZero() || now.After(measured) {
				if !measured.IsZero() {
					reserve = reserveFor(frees-measuredFrees, now.Sub(measured), r.took, w.LeaseTTL, w.Concurrency)
				}
				measured, measuredFrees = now, frees
			}
		default:
			due, reserve, backToBack = false, 0, false
		}
	}
	// stale says a ready run has used up half its lease: all slots were busy for that long, so
	// another worker may well start it sooner, and a slot that started it now would have too
	// little of the lease left before the engine's first renewal (a third of the TTL after the
	// start). It is handed back instead, while its lease still runs (after that the run may
	// be another claim's, even one of this worker's).
	stale := func(r readyRun) bool { return time.Since(r.leased) >= w.LeaseTTL/2 }
	busyTooLong := "handed back before it started by " + w.Owner + ": claimed ahead, and no slot freed up within half its lease"
	// handBack releases the stale ready runs. It runs every quarter of the TTL, so a run is
	// handed back at most three quarters of its lease after its claim asked for it.
	handBack := func() {
		kept := ready[:0]
		for _, r := range ready {
			if stale(r) {
				release(r, busyTooLong)
				continue
			}
			kept = append(kept, r)
		}
		if len(kept) < len(ready) {
			// The slots are busy for long: claiming ahead again would only hand back again.
			reserve = 0
		}
		clear(ready[len(kept):])
		ready = kept
	}
	for {
		for slots > 0 && len(ready) > 0 {
			if stale(ready[0]) {
				release(ready[0], busyTooLong)
				reserve = 0
			} else {
				runs <- ready[0].run
				slots--
			}
			ready[0] = readyRun{}
			ready = ready[1:]
		}
		if ctx.Err() != nil {
			// A run goes to a slot only for a free slot counted here: each slot reports free
			// once per run it is given, into a buffer of one report per slot, and nobody reads
			// the reports after this. The claims in flight are waited for, and slots that
			// free up meanwhile are counted.
			for inflight > 0 {
				select {
				case r := <-results:
					handOut(r)
				case <-free:
					slots++
				}
			}
			for counted := false; !counted; {
				select {
				case <-free:
					slots++
				default:
					counted = true
				}
			}
			// What no slot is free for is handed back: the slots may stay busy for the whole
			// drain, and another worker can start it now.
			for _, r := range ready {
				if slots > 0 && !stale(r) {
					runs <- r.run
					slots--
					continue
				}
				release(r, "handed back before it started by "+w.Owner+", which is stopping")
			}
			return
		}
		if starting && slots == w.Concurrency {
			starting, cooling = false, false
		}
		// A busy queue is claimed from once half the reserve is used up; otherwise after the
		// cooldown, so that slots freeing up one by one are claimed for together.
		n := slots + reserve - len(ready) - asked
		most := n
		if finishing {
			// Its slots stay free: each claim asks for all of them, whatever the claim in
			// flight asked for, and takes up to finishingClaim runs per slot to finish. A claim
			// that comes back with runs for the slots ends this (those beyond the free slots
			// wait ready, as a reserve does).
			n = slots - len(ready)
			most = max(n, finishingClaim*w.Concurrency)
		}
		claimNow := n > 0 && due && inflight < maxInflight && (reserve > 0 && n >= (reserve+1)/2 || reserve == 0 && !cooling)
		// The lane goes, and so does a wait for one, as soon as this worker would not drain
		// now: it stopped (a claim came back with runs for its slots, or found nothing due),
		// or its slots are taken. A lane kept meanwhile would keep the host's other workers
		// from claiming at all.
		if inflight == 0 && (!backToBack || !claimNow) {
			lane.drop()
		}
		if claimNow && (!backToBack || lane.hold(laneCtx)) {
			inflight++
			asked += n
			poll.Reset(w.Poll)
			go func() {
				start := time.Now()
				claimed, finished, full, cut, err := w.claim(claimCtx, ctx, start.Add(w.LeaseTTL), n, most)
				results <- result{asked: n, runs: claimed, finished: finished, full: full, cut: cut, err: err, took: time.Since(start), start: start}
			}()
			continue
		}
		select {
		case <-ctx.Done():
		case <-free:
			slots++
			if !measured.IsZero() {
				frees++
			}
		case r := <-results:
			handOut(r)
		case <-cool.C:
			cooling = starting
		case _, ok := <-w.Wake:
			if !ok {
				w.Wake = nil
			}
			due = true
		case <-poll.C:
			due = true
			poll.Reset(w.Poll)
		case <-staleCheck.C:
			handBack()
		case r := <-lane.got:
			lane.arrived(r)
		}
	}
}
