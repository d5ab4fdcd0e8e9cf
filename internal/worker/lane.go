package worker

import (
	"context"
	"log/slog"
)

// laneHolder is the fetcher's hold on a host lane (Worker.Lanes). It belongs to the fetcher's
// goroutine, apart from the wait it starts.
type laneHolder struct {
	lanes Lanes
	log   *slog.Logger
	owner string
	// release is the held lane's; nil while none is held.
	release func()
	waiting bool
	got     chan laneResult
	// told is set once the wait for a lane was logged at Info: a worker that waits behind
	// another at every backlog logs it once, then at Debug. toldStalled is the same for a
	// holder that shows no sign of life, at Warn.
	told, toldStalled bool
}

type laneResult struct {
	release func()
	stalled bool
	err     error
}

func newLaneHolder(lanes Lanes, log *slog.Logger, owner string) *laneHolder {
	return &laneHolder{lanes: lanes, log: log, owner: owner, got: make(chan laneResult)}
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
		l.disable(err)
		return true
	}
	if ok {
		l.release = release
		return true
	}
	l.waiting = true
	level := slog.LevelDebug
	if !l.told {
		level, l.told = slog.LevelInfo, true
	}
	l.log.Log(ctx, level, "another worker of this host is draining runs of pure steps; waiting for its lane before draining too",
		"owner", l.owner)
	lanes := l.lanes
	go func() {
		release, stalled, err := lanes.Wait(ctx)
		if err != nil && ctx.Err() != nil {
			return
		}
		select {
		case l.got <- laneResult{release, stalled, err}:
		case <-ctx.Done():
			if release != nil {
				release()
			}
		}
	}()
	return false
}

// arrived takes what the wait got: the lane, or an error that turns lanes off.
func (l *laneHolder) arrived(r laneResult) {
	l.waiting = false
	if r.err != nil {
		l.disable(r.err)
		return
	}
	if r.stalled {
		level := slog.LevelDebug
		if !l.toldStalled {
			level, l.toldStalled = slog.LevelWarn, true
		}
		l.log.Log(context.Background(), level, "the holder of this host's lane has shown no sign of life for long (a frozen process?); draining without a lane",
			"owner", l.owner)
	}
	l.release = r.release
}

// disable goes on without lanes: a lane that cannot be taken must not stop the worker.
func (l *laneHolder) disable(err error) {
	l.log.Warn("host lanes unavailable; this worker drains without them", "owner", l.owner, "error", err.Error())
	l.lanes = nil
}

// drop releases the lane held, if any.
func (l *laneHolder) drop() {
	if l.release != nil {
		l.release()
		l.release = nil
	}
}
