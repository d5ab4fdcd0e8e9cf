// Package schedule creates the runs of scheduled pipelines, one per slot however many servers are up.
package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/operate"
)

// KeyPrefix starts the idempotency key of every scheduled run; the slot time follows. No
// other run may have such a key (operate refuses it).
const KeyPrefix = operate.ScheduleKeyPrefix

// slotFormat has a fixed width, so that keys sort as their slots do.
const slotFormat = "2006-01-02T15:04:05.000Z"

// Key is the idempotency key of a slot: two servers firing the same slot make one run.
func Key(slot time.Time) string { return KeyPrefix + slot.UTC().Format(slotFormat) }

// Actor is recorded as the creator of scheduled runs.
const Actor = "schedule"

// Ledger is what the scheduler reads from the ledger.
type Ledger interface {
	// LatestKey returns a pipeline's greatest run key with the prefix, or "".
	LatestKey(ctx context.Context, pipeline, prefix string) (string, error)
}

// Slots computes the slot times of a schedule.
type Slots struct {
	every time.Duration
	next  func(time.Time) time.Time
}

// NewSlots reads a schedule trigger.
func NewSlots(t *domain.ScheduleTrigger) (*Slots, error) {
	if t.Every > 0 {
		return &Slots{every: t.Every}, nil
	}
	loc := time.UTC
	if t.Timezone != "" {
		l, err := time.LoadLocation(t.Timezone)
		if err != nil {
			return nil, err
		}
		loc = l
	}
	c, err := dsl.ParseCron(t.Cron)
	if err != nil {
		return nil, err
	}
	return &Slots{next: func(at time.Time) time.Time { return c.Next(at.In(loc)) }}, nil
}

// After returns the first slot strictly after t. Interval slots are aligned on the Unix
// epoch, so every server computes the same ones.
func (s *Slots) After(t time.Time) time.Time {
	if s.every > 0 {
		n := s.every.Milliseconds()
		ms := t.UnixMilli()
		return time.UnixMilli((ms/n + 1) * n).UTC()
	}
	return s.next(t).UTC()
}

// Missed returns the slots in (since, now] that a catch-up policy runs, oldest first.
func (s *Slots) Missed(policy string, since, now time.Time) []time.Time {
	if policy == domain.CatchUpSkip || policy == "" || since.IsZero() {
		return nil
	}
	if floor := now.Add(-time.Duration(domain.MaxCatchUp+1) * s.every); s.every > 0 && since.Before(floor) {
		since = floor // a long outage: no need to walk slots that would be dropped
	}
	var out []time.Time
	for t := s.After(since); !t.After(now); t = s.After(t) {
		out = append(out, t)
		if len(out) > domain.MaxCatchUp {
			out = out[1:] // keep the most recent ones
		}
	}
	if policy == domain.CatchUpLatest && len(out) > 1 {
		out = out[len(out)-1:]
	}
	return out
}

// Scheduler fires the slots of the pipelines it is given.
type Scheduler struct {
	Ops       *operate.Ops
	Ledger    Ledger
	Pipelines []*domain.Pipeline
	Log       *slog.Logger
	// Lag, when set, hears how late each created run was after its slot.
	Lag func(pipeline string, lag time.Duration)

	mu   sync.Mutex
	next map[string]time.Time
}

// Next returns the next slot of a pipeline, once the scheduler runs.
func (s *Scheduler) Next(pipeline string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.next[pipeline]
	return t, ok
}

// Check reads every schedule; the server refuses to start on a bad one.
func (s *Scheduler) Check() error {
	var errs []string
	for _, p := range s.Pipelines {
		if _, err := NewSlots(p.Triggers.Schedule); err != nil {
			errs = append(errs, fmt.Sprintf("%s: schedule: %v", p.Name, err))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Run fires slots until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.Check(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, p := range s.Pipelines {
		slots, _ := NewSlots(p.Triggers.Schedule)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx, p, slots)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Scheduler) setNext(name string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = map[string]time.Time{}
	}
	s.next[name] = t
}

func (s *Scheduler) loop(ctx context.Context, p *domain.Pipeline, slots *Slots) {
	now := time.Now()
	last := s.lastSlot(ctx, p)
	for _, slot := range slots.Missed(p.Triggers.Schedule.CatchUp, last, now) {
		if ctx.Err() != nil {
			return
		}
		s.fire(ctx, p, slot)
	}
	from := now
	if last.After(from) {
		from = last
	}
	next := slots.After(from)
	for {
		s.setNext(p.Name, next)
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		s.fire(ctx, p, next)
		next = slots.After(next)
	}
}

// lastSlot is the newest slot any server created a run for, or zero.
func (s *Scheduler) lastSlot(ctx context.Context, p *domain.Pipeline) time.Time {
	key, err := s.Ledger.LatestKey(ctx, p.Name, KeyPrefix)
	if err != nil {
		s.Log.Error("schedule: reading the last slot", "pipeline", p.Name, "error", err)
		return time.Time{}
	}
	t, err := time.Parse(slotFormat, strings.TrimPrefix(key, KeyPrefix))
	if err != nil {
		return time.Time{}
	}
	return t
}

// fireTimeout bounds the creation of a slot's run once it has started.
const fireTimeout = 30 * time.Second

// fire creates the run of a slot, or finds the one another server created.
func (s *Scheduler) fire(ctx context.Context, p *domain.Pipeline, slot time.Time) {
	// A slot that fired is written to the end even when the server starts to stop meanwhile:
	// a write cancelled half-way may still commit, and the log would then miss a run the ledger
	// holds (seen with two servers stopping while a slot's commit was in flight).
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fireTimeout)
	defer cancel()
	res, err := s.Ops.Submit(wctx, Actor, operate.SubmitRequest{Pipeline: p, Input: p.Triggers.Schedule.Input, Key: Key(slot), Scheduled: true})
	switch {
	case operate.KindOf(err) == operate.KindDisabled:
		s.Log.Info("schedule: slot skipped, the pipeline is disabled", "pipeline", p.Name, "slot", slot)
		return
	case err != nil:
		s.Log.Error("schedule: slot not run", "pipeline", p.Name, "slot", slot, "error", err)
		return
	}
	if !res.Duplicate {
		lag := time.Since(slot)
		if s.Lag != nil {
			s.Lag(p.Name, lag)
		}
		s.Log.Info("schedule: run created", "pipeline", p.Name, "slot", slot, "run", res.Run.ID, "lag_ms", lag.Milliseconds())
	}
}
