package ledger

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// finishAs returns a Finisher that ends each run it is offered in the state its idempotency
// key's suffix picks (…s succeeded, …d dead-lettered, …r retry; anything else is left to the
// claim), with one attempt of a step s, and records what it was offered.
func finishAs(offered *[]string) Finisher {
	return func(_ context.Context, r *domain.Run) *domain.Finished {
		*offered = append(*offered, r.ID)
		now := time.Now()
		att := &domain.Attempt{RunID: r.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k-" + r.ID,
			StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded, Output: []byte(`{"ok":true}`)}
		ch := domain.Change{To: domain.StateSucceeded, Reason: "all steps completed", Actor: "w1", Owner: "w1"}
		switch {
		case strings.HasSuffix(r.IdempotencyKey, "s"):
		case strings.HasSuffix(r.IdempotencyKey, "d"):
			att.Outcome, att.ErrorClass, att.Error = domain.OutcomeFailed, domain.ClassPermanent, "bad input"
			ch = domain.Change{To: domain.StateFailedPermanent, Reason: "dead-lettered: bad input", Actor: "w1", Owner: "w1",
				ErrorClass: domain.ClassPermanent, Error: "bad input", FailedStep: "s"}
		case strings.HasSuffix(r.IdempotencyKey, "r"):
			att.Outcome, att.ErrorClass, att.Error = domain.OutcomeFailed, domain.ClassUnknown, "odd"
			ch = domain.Change{To: domain.StateFailedTransient, Reason: "retry", Actor: "w1", Owner: "w1", NextAttemptAt: now.Add(time.Hour)}
		default:
			return nil
		}
		return &domain.Finished{Run: r, Attempts: []*domain.Attempt{att}, Change: ch}
	}
}

// refusing is finish with each finished run's attempt given an outcome the ledger's CHECK
// refuses, so that the claim's write of its finished runs fails.
func refusing(finish Finisher) Finisher {
	return func(ctx context.Context, r *domain.Run) *domain.Finished {
		f := finish(ctx, r)
		if f != nil {
			f.Attempts[0].Outcome = "not an outcome"
		}
		return f
	}
}

func queueKeyed(t *testing.T, s *Store, keys ...string) []string {
	t.Helper()
	ids := make([]string, len(keys))
	for i, k := range keys {
		r := newRun(t, "p", k)
		got, _, err := s.CreateRun(context.Background(), r, "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = got.ID
		time.Sleep(2 * time.Millisecond) // claim order is creation order
	}
	return ids
}

func eventsOf(t *testing.T, s *Store, id string) string {
	t.Helper()
	evs, err := s.Events(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s>%s;", e.From, e.To)
	}
	return b.String()
}

// A claim that finishes runs writes each one from queued to its end with its attempt and two
// events (the claim, the end), and claims the others as ClaimBatch does, in one commit.
func TestClaimFinishingWritesFinishedRunsAndClaimsTheRest(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-x", "c-d", "d-r", "e-s")
	// A run already begun (a redrive) is never offered: its history must be read back.
	if _, err := s.db.Exec(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at, outcome)
		VALUES ($1, 's', -1, 1, 'old', 1, 2, 'failed')`, ids[4]); err != nil {
		t.Fatal(err)
	}
	var offered []string
	claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 10, 10, finishAs(&offered))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{ids[0], ids[1], ids[2], ids[3]}; fmt.Sprint(offered) != fmt.Sprint(want) {
		t.Fatalf("offered %v, want %v (the begun run is not offered)", offered, want)
	}
	if len(claimed) != 2 || claimed[0].ID != ids[1] || claimed[1].ID != ids[4] {
		t.Fatalf("claimed %v, want %s and %s", claimed, ids[1], ids[4])
	}
	if !claimed[0].Unstarted || claimed[1].Unstarted || claimed[0].LeaseOwner != "w1" || claimed[0].State != domain.StateProcessing {
		t.Fatalf("claimed runs: %+v / %+v", *claimed[0], *claimed[1])
	}
	if len(finished) != 3 {
		t.Fatalf("%d finished, want 3", len(finished))
	}
	for _, f := range finished {
		if f.Attempts[0].ID == 0 {
			t.Fatalf("attempt of %s has no ID after the commit", f.Run.ID)
		}
	}
	want := map[string]struct {
		state  domain.RunState
		events string
	}{
		ids[0]: {domain.StateSucceeded, ">queued;queued>processing;processing>succeeded;"},
		ids[1]: {domain.StateProcessing, ">queued;queued>processing;"},
		ids[2]: {domain.StateFailedPermanent, ">queued;queued>processing;processing>failed_permanent;"},
		ids[3]: {domain.StateFailedTransient, ">queued;queued>processing;processing>failed_transient;"},
	}
	for id, w := range want {
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != w.state || eventsOf(t, s, id) != w.events {
			t.Fatalf("%s: %s with events %s, want %s with %s", id, r.State, eventsOf(t, s, id), w.state, w.events)
		}
		if w.state != domain.StateProcessing && r.LeaseOwner != "" {
			t.Fatalf("%s ended holding a lease of %q", id, r.LeaseOwner)
		}
	}
	r, _ := s.GetRun(ctx, ids[2])
	if r.FailedStep != "s" || r.ErrorClass != domain.ClassPermanent || r.FinishedAt.IsZero() {
		t.Fatalf("dead-lettered run: %+v", r)
	}
	r, _ = s.GetRun(ctx, ids[3])
	if r.NextAttemptAt.Before(time.Now().Add(50*time.Minute)) || !r.FinishedAt.IsZero() {
		t.Fatalf("retry: next attempt %s, finished %s", r.NextAttemptAt, r.FinishedAt)
	}
	atts, err := s.Attempts(ctx, ids[0])
	if err != nil || len(atts) != 1 || atts[0].Outcome != domain.OutcomeSucceeded || string(atts[0].Output) != `{"ok":true}` {
		t.Fatalf("attempts of the finished run: %+v, %v", atts, err)
	}
	// The stats see the finished run like any other (the attempt names its pipeline).
	var pipeline string
	s.db.QueryRow(`SELECT pipeline FROM step_attempts WHERE run_id = $1`, ids[0]).Scan(&pipeline)
	if pipeline != "p" {
		t.Fatalf("attempt's pipeline = %q", pipeline)
	}
	// A worker limited to some pipelines finishes only theirs.
	other := newRun(t, "q", "z-s")
	if _, _, err := s.CreateRun(ctx, other, "test", nil); err != nil {
		t.Fatal(err)
	}
	queueKeyed(t, s, "y-s")
	offered = nil
	_, finished, _, err = s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{"q"}}, 10, 10, finishAs(&offered))
	if err != nil || len(finished) != 1 || finished[0].Run.Pipeline != "q" || len(offered) != 1 {
		t.Fatalf("a claim for pipeline q finished %d runs (offered %v): %v", len(finished), offered, err)
	}
}

// While a claim finishes its runs, they are locked: another claim skips them, and nothing of
// them is visible. When the ledger refuses the write of the finished runs (here a value its
// check refuses; in the field a text PostgreSQL cannot store), nothing of that write is kept:
// the claim is rolled back and its runs are claimed to processing instead, in a transaction
// of their own, to run in slots. Leaving them queued would have the next claim meet the same
// runs, in the same order, again and again (found by a review).
func TestClaimFinishingThatIsRefusedClaimsItsRunsInstead(t *testing.T) {
	dsn := postgresOrSkip(t)
	s, other := openOrFail(t, dsn), openOrFail(t, dsn)
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-x", "c-s")
	var offered []string
	finish := finishAs(&offered)
	seen := false
	claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 2, func(ctx context.Context, r *domain.Run) *domain.Finished {
		if !seen {
			seen = true
			// Mid-claim: the other claimer gets the third run only, and sees the first queued.
			got, err := other.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 3)
			if err != nil || len(got) != 1 || got[0].ID != ids[2] {
				t.Errorf("a claim during the finishing one took %v (%v), want %s only", got, err, ids[2])
			}
			if r0, _ := other.GetRun(ctx, ids[0]); r0.State != domain.StateQueued {
				t.Errorf("%s is %s before the claim committed", ids[0], r0.State)
			}
		}
		f := finish(ctx, r)
		if f != nil {
			f.Attempts[0].Outcome = "not an outcome" // the ledger's CHECK refuses it
		}
		return f
	})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a claim whose finished runs were refused said %v", err)
	}
	if len(finished) != 0 || len(claimed) != 2 || claimed[0].ID != ids[0] || claimed[1].ID != ids[1] || !claimed[0].Unstarted {
		t.Fatalf("claimed %v and finished %d, want %s and %s claimed, to be started", claimed, len(finished), ids[0], ids[1])
	}
	for _, id := range ids[:2] {
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		atts, _ := s.Attempts(ctx, id)
		if r.State != domain.StateProcessing || r.LeaseOwner != "w1" || len(atts) != 0 || eventsOf(t, s, id) != ">queued;queued>processing;" {
			t.Fatalf("%s after a refused finish: %s under %q, %d attempts, events %s", id, r.State, r.LeaseOwner, len(atts), eventsOf(t, s, id))
		}
	}
	// The connection is whole again: the next claim finishes a run.
	more := queueKeyed(t, s, "d-s")
	claimed, finished, _, err = s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2, 2, finishAs(&offered))
	if err != nil || len(claimed) != 0 || len(finished) != 1 || finished[0].Run.ID != more[0] {
		t.Fatalf("next claim: %v claimed, %d finished, %v", claimed, len(finished), err)
	}
}

// A process that stops in the middle of a claim (a SIGKILL, a network cut: here the server
// ends its session) leaves the runs queued, and a process that stalls there longer than the
// lease has its transaction ended by the server, as a lease would run out: either way, another
// worker takes the runs, and nothing of the stalled claim is written.
func TestClaimFinishingThatStopsMidwayLeavesTheRunsQueued(t *testing.T) {
	dsn := postgresOrSkip(t)
	s, other := openOrFail(t, dsn), openOrFail(t, dsn)
	ctx := context.Background()
	ids := queueKeyed(t, s, "a-s", "b-s")
	var offered []string
	finish := finishAs(&offered)
	_, _, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 1, 1, func(ctx context.Context, r *domain.Run) *domain.Finished {
		// Whoever holds a lock on the run is this claim's session: end it from outside.
		if _, err := other.db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE c.relname = 'runs' AND l.pid <> pg_backend_pid() AND l.granted AND l.mode = 'RowShareLock'`); err != nil {
			t.Error(err)
		}
		return finish(ctx, r)
	})
	if err == nil {
		t.Fatal("a claim whose session was ended returned no error")
	}
	if r, _ := s.GetRun(ctx, ids[0]); r.State != domain.StateQueued || eventsOf(t, s, ids[0]) != ">queued;" {
		t.Fatalf("%s after its claim's session ended: %s, events %s", ids[0], r.State, eventsOf(t, s, ids[0]))
	}
	// A claim that stalls past its lease (1 s) in the middle: the server ends it.
	var stalled sync.WaitGroup
	stalled.Add(1)
	var stallErr error
	go func() {
		defer stalled.Done()
		_, _, _, stallErr = s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Second), domain.ClaimFilter{}, 1, 1, func(ctx context.Context, r *domain.Run) *domain.Finished {
			time.Sleep(2500 * time.Millisecond)
			return finish(ctx, r)
		})
	}()
	time.Sleep(100 * time.Millisecond)
	// Meanwhile the other worker takes the second run (the first is locked), then the first
	// once the server ended the stalled claim, before that claim woke up.
	start, tookFirst := time.Now(), time.Duration(0)
	for end := time.Now().Add(5 * time.Second); tookFirst == 0 && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		got, err := other.ClaimBatch(ctx, "w2", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if r.ID == ids[0] {
				tookFirst = time.Since(start)
			}
		}
	}
	stalled.Wait()
	if tookFirst == 0 || tookFirst > 2400*time.Millisecond {
		t.Fatalf("the stalled claim's run was taken %s after it stalled, want after its 1s lease and before it woke", tookFirst)
	}
	if stallErr == nil {
		t.Fatal("the stalled claim returned no error")
	}
	if r, _ := s.GetRun(ctx, ids[0]); r.State != domain.StateProcessing || r.LeaseOwner != "w2" || eventsOf(t, s, ids[0]) != ">queued;queued>processing;" {
		t.Fatalf("%s: %s under %q, events %s; want w2's claim only", ids[0], r.State, r.LeaseOwner, eventsOf(t, s, ids[0]))
	}
}

// The rows of runs a claim finished die with a plain transaction id as their deleter, which an
// index scan may then mark dead in runs_ready once no transaction can see them. Written under a
// savepoint after the claim's lock, they died with a multixact instead (lock and update by two
// transactions), whose entries no scan marks: every lock walked every run finished since the
// last vacuum. Read off the heap page with pageinspect (skipped where it cannot be installed):
// one claim of one lock; one of several locks whose last holds a run it does not finish; and
// one whose write is refused, whose runs are claimed in a transaction of their own.
func TestClaimFinishingLeavesNoMultixactOnFinishedRuns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    []string
		n, most int
		refused bool
	}{
		{name: "one lock", keys: []string{"a-s", "b-s", "c-d", "d-r"}, n: 4, most: 4},
		{name: "several locks", keys: []string{"a-s", "b-s", "c-d", "d-r", "e-s", "f-x"}, n: 2, most: 8},
		{name: "refused", keys: []string{"a-s", "b-s", "c-x"}, n: 4, most: 4, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := postgresOrSkip(t)
			s := openOrFail(t, dsn)
			ctx := context.Background()
			if _, err := s.DB().ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA public`); err != nil {
				t.Skipf("pageinspect is not available on this server (%v)", err)
			}
			queueKeyed(t, s, tc.keys...)
			var offered []string
			finish := finishAs(&offered)
			if tc.refused {
				finish = refusing(finish)
			}
			claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, tc.n, tc.most, finish)
			if (err != nil) != tc.refused || len(claimed)+len(finished) != len(tc.keys) {
				t.Fatalf("claimed %d and finished %d of %d runs: %v", len(claimed), len(finished), len(tc.keys), err)
			}
			// Each run's row was replaced once, by the claim: the versions it replaced point
			// to their successors (t_ctid is not their own place). 0x1000 is
			// HEAP_XMAX_IS_MULTI. The runs fit in the table's first page.
			var replaced, multi int
			err = s.DB().QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE t_infomask & x'1000'::int <> 0)
				FROM public.heap_page_items(public.get_raw_page(current_schema() || '.runs', 0))
				WHERE lp_flags = 1 AND t_ctid <> ('(0,' || lp || ')')::tid`).Scan(&replaced, &multi)
			if err != nil {
				t.Fatal(err)
			}
			if replaced != len(tc.keys) {
				t.Fatalf("%d replaced row versions on the page, want one for each of the %d runs", replaced, len(tc.keys))
			}
			if multi != 0 {
				t.Fatalf("%d of the %d replaced row versions have a multixact as their deleter", multi, replaced)
			}
		})
	}
}

// A refused claim whose runs not finished held a lease takeover (with an attempt its old owner
// left running) and a retry now due: rolled back and claimed again in a transaction of its own,
// each is taken over as in the claim it replaces, with the old owner's attempt closed, the right
// runs marked unstarted, and every event dated after the one before it.
func TestClaimFinishingThatIsRefusedTakesOverAsTheClaimWould(t *testing.T) {
	dsn := postgresOrSkip(t)
	s, old := openOrFail(t, dsn), openOrFail(t, dsn)
	ctx := context.Background()
	ids := queueKeyed(t, s, "e-x", "r-x", "a-s", "b-x")
	got, err := old.ClaimBatch(ctx, "old", time.Now().Add(-time.Second), domain.ClaimFilter{}, 2)
	if err != nil || len(got) != 2 {
		t.Fatalf("old claimed %v: %v", got, err)
	}
	now := time.Now()
	if err := old.StartAttempt(ctx, "old", &domain.Attempt{RunID: ids[0], StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: now, Outcome: domain.OutcomeRunning}); err != nil {
		t.Fatal(err)
	}
	att := &domain.Attempt{RunID: ids[1], StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: now, FinishedAt: now,
		Outcome: domain.OutcomeFailed, ErrorClass: domain.ClassUnknown, Error: "odd"}
	if err := old.FinishAttempt(ctx, "old", att, &domain.Change{To: domain.StateFailedTransient, Reason: "retry", Actor: "old", Owner: "old",
		NextAttemptAt: now.Add(-time.Second), ErrorClass: domain.ClassUnknown, Error: "odd", FailedStep: "s"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	var offered []string
	claimed, finished, _, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 4, 4, refusing(finishAs(&offered)))
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a claim whose finished runs were refused said %v", err)
	}
	if len(finished) != 0 || len(claimed) != len(ids) {
		t.Fatalf("claimed %d and finished %d, want all %d claimed", len(claimed), len(finished), len(ids))
	}
	unstarted := map[string]bool{}
	for _, r := range claimed {
		unstarted[r.ID] = r.Unstarted
	}
	if unstarted[ids[0]] || unstarted[ids[1]] || !unstarted[ids[2]] || !unstarted[ids[3]] {
		t.Errorf("unstarted: takeover %v, retry %v, fresh %v and %v; want false, false, true, true",
			unstarted[ids[0]], unstarted[ids[1]], unstarted[ids[2]], unstarted[ids[3]])
	}
	for _, id := range ids {
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != domain.StateProcessing || r.LeaseOwner != "w1" {
			t.Errorf("%s is %s under %q, want processing under w1", id, r.State, r.LeaseOwner)
		}
		evs, err := s.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].At.Before(evs[i-1].At) {
				t.Errorf("%s: event %q dated before %q", id, evs[i].Reason, evs[i-1].Reason)
			}
		}
		if id == ids[0] && evs[len(evs)-1].Reason != "taken over from old (lease expired) by w1" {
			t.Errorf("the takeover's event says %q", evs[len(evs)-1].Reason)
		}
	}
	atts, err := s.Attempts(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 1 || atts[0].Outcome != domain.OutcomeAbandoned || !strings.Contains(atts[0].Error, "(old)") {
		t.Errorf("the old owner's attempt: %+v, want it abandoned, naming old", atts)
	}
}
