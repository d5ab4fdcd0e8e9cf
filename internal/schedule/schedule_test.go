package schedule_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
	"github.com/pipectl/pipectl/internal/schedule"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSlotsAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		trig domain.ScheduleTrigger
		at   string
		want string
	}{
		{"every aligns on the epoch", domain.ScheduleTrigger{Every: 30 * time.Second}, "2026-11-30T10:00:07Z", "2026-11-30T10:00:30Z"},
		{"every: a slot time itself is not after itself", domain.ScheduleTrigger{Every: 30 * time.Second}, "2026-11-30T10:00:30Z", "2026-11-30T10:01:00Z"},
		{"cron in UTC", domain.ScheduleTrigger{Cron: "0 9 * * MON"}, "2026-11-30T10:00:00Z", "2026-12-07T09:00:00Z"},
		{"cron in Paris (UTC+1 in winter)", domain.ScheduleTrigger{Cron: "0 9 * * MON", Timezone: "Europe/Paris"}, "2026-11-30T07:00:00Z", "2026-11-30T08:00:00Z"},
		{"cron across the spring change in New York", domain.ScheduleTrigger{Cron: "30 1 * * *", Timezone: "America/New_York"}, "2026-03-07T12:00:00Z", "2026-03-08T06:30:00Z"},
		{"descriptor", domain.ScheduleTrigger{Cron: "@daily"}, "2026-11-30T10:00:00Z", "2026-12-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := schedule.NewSlots(&tc.trig)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.After(mustTime(t, tc.at)); !got.Equal(mustTime(t, tc.want)) {
				t.Fatalf("after %s: %s, want %s", tc.at, got, tc.want)
			}
		})
	}
	if _, err := schedule.NewSlots(&domain.ScheduleTrigger{Cron: "61 * * * *"}); err == nil {
		t.Fatal("a bad cron expression was read")
	}
}

func TestMissed(t *testing.T) {
	s, _ := schedule.NewSlots(&domain.ScheduleTrigger{Every: time.Minute})
	last := mustTime(t, "2026-11-30T10:00:00Z")
	now := mustTime(t, "2026-11-30T10:05:30Z")
	for _, tc := range []struct {
		policy string
		since  time.Time
		want   []string
	}{
		{domain.CatchUpSkip, last, nil},
		{domain.CatchUpLatest, last, []string{"10:05"}},
		{domain.CatchUpAll, last, []string{"10:01", "10:02", "10:03", "10:04", "10:05"}},
		{domain.CatchUpAll, time.Time{}, nil}, // never ran: nothing to catch up
		{domain.CatchUpAll, now, nil},
	} {
		var got []string
		for _, m := range s.Missed(tc.policy, tc.since, now) {
			got = append(got, m.Format("15:04"))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s since %s: %v, want %v", tc.policy, tc.since, got, tc.want)
		}
	}
	// A year down with catch_up: all runs the most recent MaxCatchUp slots, not a year of them.
	all := s.Missed(domain.CatchUpAll, last.AddDate(-1, 0, 0), now)
	if len(all) != domain.MaxCatchUp || !all[len(all)-1].Equal(mustTime(t, "2026-11-30T10:05:00Z")) {
		t.Fatalf("after a year: %d slots, last %s", len(all), all[len(all)-1])
	}
}

func TestKeysSortAsSlots(t *testing.T) {
	a := schedule.Key(mustTime(t, "2026-11-30T09:59:59Z"))
	b := schedule.Key(mustTime(t, "2026-11-30T10:00:00Z").Add(5 * time.Millisecond))
	if !(a < b) || a != "schedule:2026-11-30T09:59:59.000Z" {
		t.Fatalf("%s %s", a, b)
	}
}

// After downtime, the catch-up policy decides which missed slots get a run; slots are found
// from the ledger, so it works across restarts and servers.
func TestCatchUpAfterDowntime(t *testing.T) {
	for _, tc := range []struct {
		policy string
		missed int
	}{{domain.CatchUpSkip, 0}, {domain.CatchUpLatest, 1}, {domain.CatchUpAll, 4}} {
		t.Run(tc.policy, func(t *testing.T) {
			ctx := context.Background()
			store, err := ledger.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "l.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			v, _ := dsl.NewValidator()
			p, diags := v.Parse(filepath.Join(t.TempDir(), "tick.yaml"), []byte(`apiVersion: pipectl/v1
kind: Pipeline
name: tick
triggers:
  schedule: {every: 1h, catch_up: `+tc.policy+`}
steps:
  - {id: a, type: transform, output: x}
`))
			if p == nil {
				t.Fatal(diags)
			}
			ops := &operate.Ops{Store: store, Validator: v, NewEngine: func(actor string, v *dsl.Validator, _ operate.Providers) (*engine.Engine, error) {
				return &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Actor: actor, Owner: engine.CurrentOwner()}, nil
			}}
			// The last server made the run of the slot 4h30 ago, then everything stopped.
			slots, _ := schedule.NewSlots(p.Triggers.Schedule)
			now := time.Now()
			lastSlot := slots.After(now.Add(-5 * time.Hour))
			if _, err := ops.Submit(ctx, schedule.Actor, operate.SubmitRequest{Pipeline: p, Input: map[string]any{}, Key: schedule.Key(lastSlot), Scheduled: true}); err != nil {
				t.Fatal(err)
			}
			s := &schedule.Scheduler{Ops: ops, Ledger: store, Pipelines: []*domain.Pipeline{p}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { s.Run(runCtx); close(done) }()
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, ok := s.Next("tick"); ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the scheduler never reached its loop")
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
			runs, _ := store.ListRuns(ctx, ledger.RunFilter{Pipeline: "tick"})
			if len(runs) != 1+tc.missed {
				t.Fatalf("%d runs after downtime, want %d", len(runs), 1+tc.missed)
			}
			next, _ := s.Next("tick")
			if !next.After(now) || next.Sub(now) > time.Hour {
				t.Fatalf("next slot %s", next)
			}
			for _, r := range runs {
				events, _ := store.Events(ctx, r.ID)
				if events[0].Actor != schedule.Actor || !strings.HasPrefix(r.IdempotencyKey, schedule.KeyPrefix) {
					t.Fatalf("run %+v created by %s", r, events[0].Actor)
				}
			}
		})
	}
}

// cancelAfterCreate is a ledger whose server starts to stop just as a run's creation commits.
type cancelAfterCreate struct {
	*ledger.Store
	cancel context.CancelFunc
}

func (c cancelAfterCreate) CreateRun(ctx context.Context, r *domain.Run, actor string, claim *domain.Claim) (*domain.Run, bool, error) {
	run, created, err := c.Store.CreateRun(ctx, r, actor, claim)
	c.cancel()
	return run, created, err
}

// A slot whose run was created while the server began to stop is logged like any other: the
// log and the ledger agree on what the scheduler created.
func TestSlotCreatedDuringShutdownIsLogged(t *testing.T) {
	ctx := context.Background()
	store, err := ledger.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, _ := dsl.NewValidator()
	p, diags := v.Parse(filepath.Join(t.TempDir(), "tick.yaml"), []byte(`apiVersion: pipectl/v1
kind: Pipeline
name: tick
triggers:
  schedule: {every: 1h, catch_up: all}
steps:
  - {id: a, type: transform, output: x}
`))
	if p == nil {
		t.Fatal(diags)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	wrapped := cancelAfterCreate{store, cancel}
	ops := &operate.Ops{Store: wrapped, Validator: v, NewEngine: func(actor string, v *dsl.Validator, _ operate.Providers) (*engine.Engine, error) {
		return &engine.Engine{Store: wrapped, Renderer: dsl.NewEvaluator(v.Expressions()), Actor: actor, Owner: engine.CurrentOwner()}, nil
	}}
	slots, _ := schedule.NewSlots(p.Triggers.Schedule)
	if _, err := ops.Submit(ctx, schedule.Actor, operate.SubmitRequest{Pipeline: p, Input: map[string]any{}, Key: schedule.Key(slots.After(time.Now().Add(-5 * time.Hour))), Scheduled: true}); err != nil {
		t.Fatal(err)
	}
	// The submit above cancelled runCtx too; the scheduler needs a live one to start.
	runCtx, cancel = context.WithCancel(ctx)
	wrapped = cancelAfterCreate{store, cancel}
	ops.Store = wrapped
	var logged strings.Builder
	s := &schedule.Scheduler{Ops: ops, Ledger: store, Pipelines: []*domain.Pipeline{p}, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	done := make(chan struct{})
	go func() { s.Run(runCtx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler did not stop")
	}
	runs, _ := store.ListRuns(ctx, ledger.RunFilter{Pipeline: "tick"})
	created := strings.Count(logged.String(), "schedule: run created")
	if len(runs) != 2 || created != 1 {
		t.Fatalf("%d runs in the ledger (want the first and one caught up), %d creations logged (want 1):\n%s", len(runs), created, logged.String())
	}
}
