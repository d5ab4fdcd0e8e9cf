package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// backends lists the ledgers the suite runs against: SQLite always, PostgreSQL when
// PIPECTL_TEST_POSTGRES names a server (each test then gets a schema of its own).
func backends(t *testing.T) map[string]func(t *testing.T) *Store {
	out := map[string]func(t *testing.T) *Store{
		"sqlite": func(t *testing.T) *Store {
			s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	if dsn := os.Getenv("PIPECTL_TEST_POSTGRES"); dsn != "" {
		out["postgres"] = func(t *testing.T) *Store {
			s, err := Open(context.Background(), PostgresTestSchema(t, dsn))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	} else {
		t.Log("PIPECTL_TEST_POSTGRES is not set: the ledger suite runs against SQLite only")
	}
	return out
}

func forEachBackend(t *testing.T, fn func(t *testing.T, s *Store)) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open(t))
		})
	}
}

var seq atomic.Int64

func newRun(t *testing.T, pipeline, key string) *domain.Run {
	return &domain.Run{
		ID: fmt.Sprintf("r-%s-%d", key, seq.Add(1)), Pipeline: pipeline, IdempotencyKey: key,
		InputHash: "h-" + key, Input: []byte(`{"k":"` + key + `"}`), SpecText: "spec", SpecHash: "sh", Version: "test",
	}
}

// force puts a run into a state directly, bypassing the state machine, to set up a case.
func force(t *testing.T, s *Store, id string, state domain.RunState, owner string) {
	t.Helper()
	if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET state = ?, lease_owner = ? WHERE id = ?`), string(state), owner, id); err != nil {
		t.Fatal(err)
	}
}

// The specification's transition table, written out independently of domain.CanTransition.
var legal = map[[2]domain.RunState]bool{
	{domain.StateQueued, domain.StateProcessing}:               true,
	{domain.StateProcessing, domain.StateSucceeded}:            true,
	{domain.StateProcessing, domain.StateFailedTransient}:      true,
	{domain.StateProcessing, domain.StateFailedPermanent}:      true,
	{domain.StateProcessing, domain.StateWaitingExternal}:      true,
	{domain.StateProcessing, domain.StateNeedsReview}:          true,
	{domain.StateFailedTransient, domain.StateProcessing}:      true,
	{domain.StateFailedTransient, domain.StateFailedPermanent}: true,
	{domain.StateWaitingExternal, domain.StateProcessing}:      true,
	{domain.StateWaitingExternal, domain.StateFailedPermanent}: true,
	{domain.StateNeedsReview, domain.StateProcessing}:          true,
	{domain.StateNeedsReview, domain.StateFailedPermanent}:     true,
	{domain.StateFailedPermanent, domain.StateQueued}:          true,
}

// TestStateMachineExhaustive tries every (from, to) pair of the seven states, in the code and in
// the ledger: each is either allowed or refused, and a refusal changes nothing.
func TestStateMachineExhaustive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for _, from := range domain.RunStates {
			for _, to := range domain.RunStates {
				want := legal[[2]domain.RunState{from, to}]
				if got := domain.CanTransition(from, to); got != want {
					t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
				}
				r := newRun(t, "sm", string(from)+"-"+string(to))
				if _, _, err := s.CreateRun(ctx, r, "test", nil); err != nil {
					t.Fatal(err)
				}
				force(t, s, r.ID, from, "owner")
				before, _ := s.Events(ctx, r.ID)
				err := s.Transition(ctx, r.ID, domain.Change{To: to, Reason: "test", Actor: "tester", Owner: "owner", LeaseOwner: "owner", LeaseUntil: time.Now().Add(time.Minute)})
				after, _ := s.GetRun(ctx, r.ID)
				events, _ := s.Events(ctx, r.ID)
				if want {
					if err != nil || after.State != to || len(events) != len(before)+1 {
						t.Errorf("%s -> %s refused: %v (state %s)", from, to, err, after.State)
					} else if e := events[len(events)-1]; e.From != from || e.To != to || e.Actor != "tester" || e.Reason != "test" {
						t.Errorf("%s -> %s: event %+v", from, to, e)
					}
					continue
				}
				if !errors.Is(err, domain.ErrStateConflict) || after.State != from || len(events) != len(before) {
					t.Errorf("%s -> %s allowed or changed the ledger: err=%v state=%s events %d->%d", from, to, err, after.State, len(before), len(events))
				}
			}
		}
	})
}

func TestLedgerRefusesUnknownStates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		r := newRun(t, "p", "k")
		if _, _, err := s.CreateRun(context.Background(), r, "test", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET state = ? WHERE id = ?`), "paused", r.ID); err == nil {
			t.Fatal("the CHECK constraint accepted an unknown state")
		}
		if _, err := s.db.Exec(s.db.Rebind(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, outcome) VALUES (?, 'a', -1, 1, 'k', 1, 'maybe')`), r.ID); err == nil {
			t.Fatal("the CHECK constraint accepted an unknown outcome")
		}
	})
}

func TestCreateRunIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "same")
		first, created, err := s.CreateRun(ctx, r, "a", &domain.Claim{Owner: "me", LeaseUntil: time.Now().Add(time.Minute)})
		if err != nil || !created || first.State != domain.StateProcessing || first.LeaseOwner != "me" {
			t.Fatalf("first create: %+v %v %v", first, created, err)
		}
		again := newRun(t, "p", "same")
		got, created, err := s.CreateRun(ctx, again, "b", nil)
		if err != nil || created || got.ID != first.ID {
			t.Fatalf("duplicate create: %+v %v %v", got, created, err)
		}
		events, _ := s.Events(ctx, first.ID)
		if len(events) != 2 || events[0].To != domain.StateQueued || events[1].To != domain.StateProcessing {
			t.Fatalf("events %+v", events)
		}
		// Same key in another pipeline is another run.
		other := newRun(t, "q", "same")
		if _, created, err := s.CreateRun(ctx, other, "c", nil); err != nil || !created {
			t.Fatalf("other pipeline: %v %v", created, err)
		}
	})
}

func TestConcurrentCreateOneWinner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		var mu sync.Mutex
		ids := map[string]int{}
		wins := 0
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := newRun(t, "p", "race")
				r.ID = fmt.Sprintf("race-%d", i)
				got, created, err := s.CreateRun(ctx, r, "t", nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids[got.ID]++
				if created {
					wins++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if wins != 1 || len(ids) != 1 {
			t.Fatalf("wins %d, ids %v", wins, ids)
		}
	})
}

func TestLeaseOwnership(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "lease")
		if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "a", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := s.RenewLease(ctx, r.ID, "b", time.Now().Add(time.Hour)); !errors.Is(err, domain.ErrLeaseLost) {
			t.Fatalf("a stranger renewed the lease: %v", err)
		}
		att := &domain.Attempt{RunID: r.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeRunning}
		if err := s.StartAttempt(ctx, "a", att); err != nil || att.ID == 0 {
			t.Fatalf("start: %v id=%d", err, att.ID)
		}
		if err := s.Transition(ctx, r.ID, domain.Change{To: domain.StateSucceeded, Owner: "b", Actor: "b"}); !errors.Is(err, domain.ErrLeaseLost) {
			t.Fatalf("a stranger finished the run: %v", err)
		}
		if err := s.TakeOver(ctx, r.ID, "a", "b", time.Now().Add(time.Minute), "a died", "b"); err != nil {
			t.Fatal(err)
		}
		// The old owner can no longer write its result.
		att.Outcome = domain.OutcomeSucceeded
		if err := s.FinishAttempt(ctx, "a", att, nil); !errors.Is(err, domain.ErrLeaseLost) {
			t.Fatalf("the previous owner wrote after a takeover: %v", err)
		}
		attempts, _ := s.Attempts(ctx, r.ID)
		if len(attempts) != 1 || attempts[0].Outcome != domain.OutcomeAbandoned {
			t.Fatalf("attempts after takeover: %+v", attempts)
		}
		done := &domain.Attempt{RunID: r.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 2, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeSucceeded, Output: []byte(`{"ok":true}`)}
		if err := s.FinishAttempt(ctx, "b", done, &domain.Change{To: domain.StateSucceeded, Owner: "b", Actor: "b"}); err != nil {
			t.Fatal(err)
		}
		got, _ := s.GetRun(ctx, r.ID)
		if got.State != domain.StateSucceeded || got.LeaseOwner != "" || got.FinishedAt.IsZero() {
			t.Fatalf("final run %+v", got)
		}
	})
}

// TestMigrateKeepsOlderLedgers opens a ledger written by the first schema version and checks
// that the later migrations keep its rows.
func TestMigrateKeepsOlderLedgers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := sqlx.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	first, err := migrations.ReadFile("migrations/sqlite/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
		string(first),
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 1)`,
		`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at, finished_at) VALUES ('r1', 'p', 'k', 'h', '{}', 's', 'h', 'v', 'succeeded', 1000, 2000, 2000)`,
		`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at, duration_ms, outcome, output) VALUES ('r1', 'a', -1, 1, 'k', 1000, 1500, 500, 'succeeded', '"out"')`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	s, err := Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.GetRun(context.Background(), "r1")
	if err != nil || r.State != domain.StateSucceeded || r.StepKeyBase != "" {
		t.Fatalf("run after migration: %+v %v", r, err)
	}
	as, err := s.Attempts(context.Background(), "r1")
	if err != nil || len(as) != 1 || string(as[0].Output) != `"out"` || as[0].DurationMS != 500 {
		t.Fatalf("attempts after migration: %+v %v", as, err)
	}
	stats, err := s.Stats(context.Background(), time.UnixMilli(0), "")
	if err != nil || len(stats) != 1 || stats[0].Steps[0].Attempts != 1 {
		t.Fatalf("the backfilled attempt is not counted: %+v %v", stats, err)
	}
}

func TestClaimNextRespectsCapsAndKillSwitch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		for i := range 3 {
			r := newRun(t, "capped", fmt.Sprint("c", i))
			if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
				t.Fatal(err)
			}
		}
		other := newRun(t, "other", "o1")
		if _, _, err := s.CreateRun(ctx, other, "t", nil); err != nil {
			t.Fatal(err)
		}
		until := time.Now().Add(time.Minute)
		cap1 := domain.ClaimFilter{Pipelines: []string{"capped"}, MaxPerPipeline: 1}
		first, err := s.ClaimNext(ctx, "w1", until, cap1)
		if err != nil || first == nil || first.State != domain.StateProcessing || first.LeaseOwner != "w1" {
			t.Fatalf("first claim: %+v %v", first, err)
		}
		if again, err := s.ClaimNext(ctx, "w2", until, cap1); err != nil || again != nil {
			t.Fatalf("the cap of one was exceeded: %+v %v", again, err)
		}
		if err := s.SetPipelineDisabled(ctx, "other", true, "maintenance", "ops"); err != nil {
			t.Fatal(err)
		}
		if got, err := s.ClaimNext(ctx, "w2", until, domain.ClaimFilter{Pipelines: []string{"other"}}); err != nil || got != nil {
			t.Fatalf("a disabled pipeline's run was claimed: %+v %v", got, err)
		}
		if err := s.Transition(ctx, first.ID, domain.Change{To: domain.StateSucceeded, Owner: "w1", Actor: "w1"}); err != nil {
			t.Fatal(err)
		}
		second, err := s.ClaimNext(ctx, "w2", until, cap1)
		if err != nil || second == nil || second.ID == first.ID {
			t.Fatalf("after the first finished, the next was not claimed: %+v %v", second, err)
		}
		// An expired lease is taken over, and the takeover is an event.
		if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET lease_expires_at = 1 WHERE id = ?`), second.ID); err != nil {
			t.Fatal(err)
		}
		taken, err := s.ClaimNext(ctx, "w3", until, domain.ClaimFilter{Pipelines: []string{"capped"}})
		if err != nil || taken == nil || taken.ID != second.ID || taken.LeaseOwner != "w3" {
			t.Fatalf("takeover: %+v %v", taken, err)
		}
		events, _ := s.Events(ctx, second.ID)
		if last := events[len(events)-1]; last.From != domain.StateProcessing || last.To != domain.StateProcessing || last.Actor != "w3" {
			t.Fatalf("takeover event %+v", last)
		}
	})
}

func TestRebindSpecIsConditionalAndRecorded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "k-rebind")
		if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
			t.Fatal(err)
		}
		next := domain.Run{SpecText: "edited", SpecHash: "hash-2", SpecPath: "p2.yaml"}
		if err := s.RebindSpec(ctx, r.ID, "not-the-hash", next, "why", "ann"); !errors.Is(err, domain.ErrStateConflict) {
			t.Fatalf("rebind from a hash the run does not have: %v", err)
		}
		if err := s.RebindSpec(ctx, r.ID, r.SpecHash, next, "spec changed", "ann"); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.SpecHash != "hash-2" || got.SpecText != "edited" || got.SpecPath != "p2.yaml" || got.State != domain.StateQueued {
			t.Fatalf("after rebind: %+v", got)
		}
		events, err := s.Events(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		last := events[len(events)-1]
		if last.Reason != "spec changed" || last.Actor != "ann" || last.From != domain.StateQueued || last.To != domain.StateQueued {
			t.Fatalf("last event %+v", last)
		}
		// A second rebind from the old hash loses: the run moved on.
		if err := s.RebindSpec(ctx, r.ID, r.SpecHash, next, "again", "bob"); !errors.Is(err, domain.ErrStateConflict) {
			t.Fatalf("second rebind from the old hash: %v", err)
		}
	})
}
