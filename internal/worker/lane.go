package worker

import (
	"context"
	"log/slog"
)

// laneHolder is the fetcher's hold on a host lane (Worker.Lanes). It belongs to the fetcher's
// goroutine, apart from the wait it starts.
type laneHolder struct {
	lanes   Lanes
	log     *slog.Logger
	metrics *Metrics
	owner   string
	// release is the held lane's; nil while none is held. state says whether it is a lane
	// ("held") or a drain without one ("without").
	release func()
	state   string
	// waiting is set while a wait is under way; cancel ends it. Each wait has its own number
	// (gen), so that what an ended wait still delivers is let go rather than kept.
	waiting bool
	cancel  context.CancelFunc
	gen     int
	got     chan laneResult
	// told, toldStalled and toldFailed are set once the matching line was logged at its own
	// level: a worker that waits behind another at every backlog logs it once, then at Debug.
	told, toldStalled, toldFailed bool
}

type laneResult struct {
	gen     int
	release func()
	stalled bool
	err     error
}

func newLaneHolder(lanes Lanes, log *slog.Logger, metrics *Metrics, owner string) *laneHolder {
	return &laneHolder{lanes: lanes, log: log, metrics: metrics, owner: owner, got: make(chan laneResult)}
}

// logOnce logs msg at level the first time (told not set), at Debug after.
func (l *laneHolder) logOnce(told *bool, level slog.Level, msg string, args ...any) {
	if *told {
		level = slog.LevelDebug
	}
	*told = true
	l.log.Log(context.Background(), level, msg, append([]any{"owner", l.owner}, args...)...)
}

// hold says whether the fetcher may claim back to back now: it holds a lane, or there are no
// lanes to hold. Otherwise it starts waiting for one (once), and the fetcher learns of it on
// got. ctx ends the wait.
func (l *laneHolder) hold(ctx context.Context) bool {
	if l.lanes == nil || l.release != nil {
		return true
	}
	if l.waiting {
		return false
	}
	release, ok, err := l.lanes.TryTake()
	if err != nil {
		l.failed(err)
		return true
	}
	if ok {
		l.took(release, "held")
		return true
	}
	l.waiting = true
	l.gauge("waiting", 1)
	l.logOnce(&l.told, slog.LevelInfo, "another worker of this host is draining runs of pure steps; waiting for its lane before draining too")
	l.gen++
	gen, lanes := l.gen, l.lanes
	wctx, cancel := context.WithCancel(ctx)
	l.cancel = cancel
	go func() {
		release, stalled, err := lanes.Wait(wctx)
		if err != nil && wctx.Err() != nil {
			return
		}
		select {
		case l.got <- laneResult{gen, release, stalled, err}:
		case <-wctx.Done():
			if release != nil {
				release()
			}
		}
	}()
	return false
}

// arrived takes what a wait got: the lane, or an error that makes this drain go without one.
// What a wait that was called off delivers is let go.
func (l *laneHolder) arrived(r laneResult) {
	if !l.waiting || r.gen != l.gen {
		if r.release != nil {
			r.release()
		}
		return
	}
	l.stopWaiting()
	switch {
	case r.err != nil:
		l.failed(r.err)
	case r.stalled:
		l.logOnce(&l.toldStalled, slog.LevelWarn, "the holder of this host's lane has shown no sign of life for long (a frozen process?); draining without a lane")
		l.took(r.release, "without")
	default:
		l.took(r.release, "held")
	}
}

// failed lets this drain go on without a lane: a lane that cannot be taken must not stop the
// worker. The next drain tries the lanes again, since the cause may pass (files a full process
// could not open, say).
func (l *laneHolder) failed(err error) {
	l.logOnce(&l.toldFailed, slog.LevelWarn, "host lanes unavailable; this worker drains without one", "error", err.Error())
	l.took(func() {}, "without")
}

// took keeps release until the drain ends; state is the gauge's: "held", or "without" when
// the worker drains without a lane.
func (l *laneHolder) took(release func(), state string) {
	l.release, l.state = release, state
	l.gauge(state, 1)
}

func (l *laneHolder) stopWaiting() {
	if l.waiting {
		l.cancel()
		l.waiting = false
		l.gauge("waiting", 0)
	}
}

// drop releases the lane held, if any, and calls off a wait for one.
func (l *laneHolder) drop() {
	l.stopWaiting()
	if l.release != nil {
		l.gauge(l.state, 0)
		l.release()
		l.release = nil
	}
}

func (l *laneHolder) gauge(state string, v float64) {
	if l.metrics != nil {
		l.metrics.HostLane.WithLabelValues(state).Set(v)
	}
}
