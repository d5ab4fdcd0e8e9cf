package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// mergedCase is one run's commit in a merged batch: its attempts, where it ends, and what
// happened to the run before the commit.
type mergedCase struct {
	key      string
	attempts int
	to       domain.RunState
	failed   bool   // the last attempt failed (with an error class and text)
	item     int    // item index of the attempts
	owner    string // who holds the run when the batch commits ("" with state)
	state    domain.RunState
}

var mergedCases = []mergedCase{
	{key: "one", attempts: 1, to: domain.StateSucceeded, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	{key: "three", attempts: 3, to: domain.StateSucceeded, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	{key: "items", attempts: 2, to: domain.StateSucceeded, item: 4, owner: "me", state: domain.StateProcessing},
	{key: "perm", attempts: 2, to: domain.StateFailedPermanent, failed: true, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	{key: "retry", attempts: 1, to: domain.StateFailedTransient, failed: true, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	{key: "review", attempts: 1, to: domain.StateNeedsReview, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	{key: "wait", attempts: 2, to: domain.StateWaitingExternal, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
	// Taken over by another worker after this one's lease ran out.
	{key: "lost", attempts: 2, to: domain.StateSucceeded, item: domain.NoItem, owner: "other", state: domain.StateProcessing},
	// Failed by an operator (pipectl fail) while the worker ran it.
	{key: "operator", attempts: 1, to: domain.StateSucceeded, item: domain.NoItem, owner: "", state: domain.StateFailedPermanent},
	{key: "last", attempts: 8, to: domain.StateSucceeded, item: domain.NoItem, owner: "me", state: domain.StateProcessing},
}

// mergedFixture creates the runs of mergedCases on s (claimed by "me", then moved as each case
// says) and returns each case's write: the attempts and the change chainedStmt commits.
func mergedFixture(t *testing.T, s *Store, tag string) ([]*domain.Run, [][]*domain.Attempt, []domain.Change) {
	t.Helper()
	ctx := context.Background()
	base := time.UnixMilli(1_700_000_000_000)
	var runs []*domain.Run
	var atts [][]*domain.Attempt
	var changes []domain.Change
	for i, c := range mergedCases {
		r := newRun(t, "p", tag+"-"+c.key)
		r.ID = "m-" + c.key // the same ids on both ledgers, so that their rows compare
		if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "me", LeaseUntil: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if c.owner != "me" || c.state != domain.StateProcessing {
			force(t, s, r.ID, c.state, c.owner)
		}
		var as []*domain.Attempt
		for j := range c.attempts {
			a := &domain.Attempt{RunID: r.ID, StepID: fmt.Sprintf("s%d", j), ItemIndex: c.item, Attempt: 1,
				StepKey: fmt.Sprintf("k-%s-%d", c.key, j), StartedAt: base.Add(time.Duration(i*10+j) * time.Millisecond),
				FinishedAt: base.Add(time.Duration(i*10+j+1) * time.Millisecond), DurationMS: 1, Outcome: domain.OutcomeSucceeded,
				Output: []byte(fmt.Sprintf(`{"n":%d}`, j))}
			if c.failed && j == c.attempts-1 {
				a.Outcome, a.ErrorClass, a.Error, a.Output = domain.OutcomeFailed, domain.ErrorClass("permanent"), "it broke: "+c.key, nil
			}
			as = append(as, a)
		}
		ch := domain.Change{To: c.to, Owner: "me", Actor: "worker me", Reason: "finished " + c.key}
		switch c.to {
		case domain.StateFailedTransient:
			ch.NextAttemptAt, ch.ErrorClass, ch.Error, ch.FailedStep = base.Add(time.Minute), "transient", "again later", "s0"
		case domain.StateFailedPermanent:
			ch.ErrorClass, ch.Error, ch.FailedStep = "permanent", "it broke", "s1"
		}
		runs, atts, changes = append(runs, r), append(atts, as), append(changes, ch)
	}
	return runs, atts, changes
}

// TestMergedCommitWritesWhatEachStatementWould: the commits of many runs written as one
// statement (mergedSQL) leave the ledger exactly as each run's own statement would, run by
// run: the same attempts (every column but the id), the same run rows, the same events, and
// the same refusal for a run whose lease was lost or that an operator ended meanwhile. Each
// attempt gets the id of its own row.
func TestMergedCommitWritesWhatEachStatementWould(t *testing.T) {
	dsn := postgresOrSkip(t)
	merged := openOrFail(t, dsn)
	alone := openOrFail(t, PostgresTestSchema(t, dsn))
	fixed := time.UnixMilli(1_700_000_100_000)
	ctx := context.Background()

	results := map[*Store][]error{}
	for _, s := range []*Store{merged, alone} {
		runs, atts, changes := mergedFixture(t, s, "x")
		s.now = func() time.Time { return fixed }
		var reqs []*txRequest
		for i, r := range runs {
			one, err := s.chainedStmt("me", r.ID, atts[i], changes[i], true)
			if err != nil {
				t.Fatal(err)
			}
			if one.merge == nil {
				t.Fatalf("case %s is not mergeable", mergedCases[i].key)
			}
			i := i
			req := request(ctx, func(tx *sqlx.Tx) error {
				for _, a := range atts[i] {
					a.ID = 0
				}
				st, err := s.chainedStmt("me", runs[i].ID, atts[i], changes[i], false)
				if err != nil {
					return err
				}
				return st.scan(tx.QueryRowContext(ctx, st.query, st.args...))
			})
			req.one = one
			reqs = append(reqs, req)
		}
		if s == merged {
			if m, _ := splitMerged(reqs); len(m) != len(reqs) {
				t.Fatalf("%d of %d writes merged", len(m), len(reqs))
			}
			s.group.pipeline(reqs)
		} else {
			for _, r := range reqs {
				s.group.run([]*txRequest{r}) // alone: its own statement
			}
		}
		for i, r := range reqs {
			err := <-r.result
			results[s] = append(results[s], err)
			c := mergedCases[i]
			if (c.owner != "me" || c.state != domain.StateProcessing) != errors.Is(err, domain.ErrLeaseLost) {
				t.Fatalf("case %s: %v", c.key, err)
			}
			for _, a := range atts[i] {
				if err != nil {
					if a.ID != 0 {
						t.Fatalf("case %s: a refused attempt has id %d", c.key, a.ID)
					}
					continue
				}
				var got struct {
					Step string `db:"step_id"`
					Key  string `db:"step_key"`
				}
				if err := s.db.Get(&got, `SELECT step_id, step_key FROM step_attempts WHERE id = $1`, a.ID); err != nil || got.Step != a.StepID || got.Key != a.StepKey {
					t.Fatalf("case %s: attempt %s got the id %d of row %+v (%v)", c.key, a.StepID, a.ID, got, err)
				}
			}
		}
	}
	for i := range mergedCases {
		if fmt.Sprint(results[merged][i]) != fmt.Sprint(results[alone][i]) {
			t.Fatalf("case %s: merged said %v, alone %v", mergedCases[i].key, results[merged][i], results[alone][i])
		}
	}
	dump := func(s *Store, q string) []map[string]any {
		rows, err := s.db.Queryx(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []map[string]any
		for rows.Next() {
			m := map[string]any{}
			if err := rows.MapScan(m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}
	for _, q := range []string{
		`SELECT id, state, lease_owner, lease_expires_at = 0 AS lease_cleared, next_attempt_at, error_class, error, failed_step, finished_at, updated_at = ` + fmt.Sprint(fixed.UnixMilli()) + ` AS moved FROM runs ORDER BY id`,
		`SELECT run_id, step_id, item_index, attempt, step_key, started_at, finished_at, duration_ms, outcome, error_class, error, request, response, output, pipeline FROM step_attempts ORDER BY run_id, id`,
		`SELECT run_id, from_state, to_state, reason, actor, at FROM run_events WHERE at = ` + fmt.Sprint(fixed.UnixMilli()) + ` ORDER BY run_id, id`,
	} {
		m, a := dump(merged, q), dump(alone, q)
		if fmt.Sprint(m) != fmt.Sprint(a) {
			t.Fatalf("%s\nmerged: %v\nalone:  %v", q, m, a)
		}
		if len(m) == 0 {
			t.Fatalf("%s: nothing to compare", q)
		}
	}
	// The attempts of a run are numbered in their order.
	var unordered int
	if err := merged.db.Get(&unordered, `SELECT count(*) FROM step_attempts a JOIN step_attempts b ON a.run_id = b.run_id AND a.id < b.id AND a.started_at > b.started_at`); err != nil || unordered != 0 {
		t.Fatalf("%d pairs of attempts numbered out of their order (%v)", unordered, err)
	}
}

// TestMergedCommitNeverKeepsAttemptsWithoutTheirTransition: if a run's attempts are written
// but its row does not move (here a trigger of the test's own skips its update), the merged
// statement must fail as a whole, so that the batch goes again write by write: the other runs
// commit, and that run keeps neither its attempts nor an event, and its caller is told.
func TestMergedCommitNeverKeepsAttemptsWithoutTheirTransition(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	var ids []string
	var reqs []*txRequest
	var atts []*domain.Attempt
	for _, key := range []string{"a", "stuck", "b"} {
		r := newRun(t, "p", key)
		if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "me", LeaseUntil: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		a := &domain.Attempt{RunID: r.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeSucceeded}
		ch := domain.Change{To: domain.StateSucceeded, Owner: "me", Actor: "me", Reason: "done"}
		one, err := s.chainedStmt("me", r.ID, []*domain.Attempt{a}, ch, true)
		if err != nil {
			t.Fatal(err)
		}
		req := request(ctx, func(tx *sqlx.Tx) error {
			a.ID = 0
			st, err := s.chainedStmt("me", r.ID, []*domain.Attempt{a}, ch, false)
			if err != nil {
				return err
			}
			return st.scan(tx.QueryRowContext(ctx, st.query, st.args...))
		})
		req.one = one
		ids, reqs, atts = append(ids, r.ID), append(reqs, req), append(atts, a)
	}
	for _, q := range []string{
		`CREATE FUNCTION skip_stuck() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = '` + ids[1] + `' AND NEW.state = 'succeeded' THEN RETURN NULL; END IF; RETURN NEW; END $$`,
		`CREATE TRIGGER skip_stuck BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION skip_stuck()`,
	} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.group.pipeline(reqs)
	for i, r := range reqs {
		err := <-r.result
		var n, events int
		s.db.Get(&n, `SELECT count(*) FROM step_attempts WHERE run_id = $1`, ids[i])
		s.db.Get(&events, `SELECT count(*) FROM run_events WHERE run_id = $1 AND to_state = 'succeeded'`, ids[i])
		run, _ := s.GetRun(ctx, ids[i])
		if i == 1 {
			if !errors.Is(err, domain.ErrStateConflict) || n != 0 || events != 0 || run.State != domain.StateProcessing || atts[i].ID != 0 {
				t.Fatalf("the run that did not move: %v, %d attempts, %d events, %s, id %d", err, n, events, run.State, atts[i].ID)
			}
			continue
		}
		if err != nil || n != 1 || events != 1 || run.State != domain.StateSucceeded || atts[i].ID == 0 {
			t.Fatalf("run %s: %v, %d attempts, %d events, %s", ids[i], err, n, events, run.State)
		}
	}
}

func TestSplitMergedTakesEachRunOnce(t *testing.T) {
	w := func(run string) *txRequest {
		return &txRequest{one: &oneStmt{merge: &chainedWrite{runID: run}}}
	}
	plain := &txRequest{one: &oneStmt{}}
	big := func(run string, bytes int) *txRequest {
		return &txRequest{one: &oneStmt{merge: &chainedWrite{runID: run, rows: []attemptRow{{Output: strings.Repeat("x", bytes)}}}}}
	}
	for _, tc := range []struct {
		batch        []*txRequest
		merged, rest string
	}{
		{[]*txRequest{w("a"), w("b"), plain, w("a"), w("c")}, "[0 1 4]", "[2 3]"},
		{[]*txRequest{w("a"), plain}, "[]", "[0 1]"},  // one write alone keeps its statement
		{[]*txRequest{w("a"), w("a")}, "[]", "[0 1]"}, // the same run twice: not two in one
		{[]*txRequest{plain, w("a"), w("b")}, "[1 2]", "[0]"},
		// Past mergedMaxBytes a write goes alone; the ones after it may still merge.
		{[]*txRequest{big("a", mergedMaxBytes/2), big("b", mergedMaxBytes/2), w("c"), big("d", mergedMaxBytes), w("e")}, "[0 2 4]", "[1 3]"},
	} {
		m, r := splitMerged(tc.batch)
		if fmt.Sprint(m) != tc.merged && !(len(m) == 0 && tc.merged == "[]") || fmt.Sprint(r) != tc.rest {
			t.Errorf("merged %v rest %v, want %s %s", m, r, tc.merged, tc.rest)
		}
	}
}
