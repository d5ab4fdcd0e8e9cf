package ledger

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// oneConditionQuery is the SQLite claim's candidates as one condition, the statement before
// the claim read each state on its own (38e6fd0): slow on a long queue, but plainly right, so
// the oracle of the tests below.
func oneConditionQuery(s *Store, now time.Time, f domain.ClaimFilter, n int) (string, []any) {
	q := `SELECT id, state, lease_owner, lease_expires_at, pipeline FROM runs
		WHERE (state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ?) OR (state = 'processing' AND lease_expires_at < ?))
		AND pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled = ?)`
	args := []any{ms(now), ms(now), true}
	if len(f.Pipelines) > 0 {
		q += ` AND pipeline IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Pipelines)), ", ") + `)`
		for _, p := range f.Pipelines {
			args = append(args, p)
		}
	}
	if f.MaxPerPipeline > 0 {
		q += ` AND NOT EXISTS (SELECT 1 FROM runs busy WHERE busy.pipeline = runs.pipeline AND busy.state = 'processing' AND busy.lease_expires_at >= ?
			ORDER BY busy.created_at LIMIT 1 OFFSET ?)`
		args = append(args, ms(now), f.MaxPerPipeline-1)
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	args = append(args, n)
	return s.db.Rebind(q), args
}

// TestSQLiteClaimMatchesOneConditionOnRandomLedgers: on random ledgers (every state, ties in
// created_at, ids out of creation order, retries and leases due exactly now, switches on and
// off, pipeline filters with unknown and repeated names, caps, n from 1 to 1000) the claim's
// candidates are exactly those of the one condition, in the same order.
func TestSQLiteClaimMatchesOneConditionOnRandomLedgers(t *testing.T) {
	seeds := int64(30)
	if raceEnabled {
		seeds = 3
	}
	claimMatchesOneCondition(t, seeds, func() *Store { return openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db")) })
}

// TestPostgresClaimMatchesOneConditionOnRandomLedgers is the same on PostgreSQL, where a claim
// with a cap or a pipeline switched off reads each pipeline's queue on its own
// (lockByPipeline) and any other walks the two branches of the queue.
//
// It goes again with the window the claim reads ahead as small as it can be (n runs): the
// random queues are shorter than the real window, and the claim's reading on past it, round
// after round, would not be compared otherwise.
func TestPostgresClaimMatchesOneConditionOnRandomLedgers(t *testing.T) {
	dsn := postgresOrSkip(t)
	claimMatchesOneCondition(t, 12, func() *Store { return openOrFail(t, PostgresTestSchema(t, dsn)) })
	window := claimWindow
	claimWindow = func(n int) int { return n }
	defer func() { claimWindow = window }()
	claimMatchesOneCondition(t, 12, func() *Store { return openOrFail(t, PostgresTestSchema(t, dsn)) })
}

func claimMatchesOneCondition(t *testing.T, seeds int64, open func() *Store) {
	ctx := context.Background()
	states := []string{"queued", "processing", "succeeded", "failed_transient", "failed_permanent", "waiting_external", "needs_review"}
	pipes := []string{"a", "b", "c", "d", "e"}
	total, procs := 0, 0
	defer func() { t.Logf("compared %d candidates, %d results with takeovers", total, procs) }()

	for seed := int64(0); seed < seeds; seed++ {
		rng := rand.New(rand.NewSource(seed))
		s := open()
		now := time.UnixMilli(1_700_000_000_000)
		nowMS := now.UnixMilli()
		nRuns := 20 + rng.Intn(400)
		for i := 0; i < nRuns; i++ {
			st := states[rng.Intn(len(states))]
			if rng.Intn(3) == 0 {
				st = "queued"
			}
			p := pipes[rng.Intn(len(pipes))]
			created := nowMS - int64(rng.Intn(20)) // many ties
			owner, exp, next := "", int64(0), int64(0)
			switch st {
			case "processing":
				owner = fmt.Sprintf("h:%d:x", rng.Intn(3))
				exp = []int64{1, 0, nowMS - 1, nowMS, nowMS + 1, nowMS + 100000}[rng.Intn(6)]
				if rng.Intn(4) == 0 {
					owner = ""
				}
			case "failed_transient":
				next = []int64{0, nowMS - 1, nowMS, nowMS + 1}[rng.Intn(4)]
			}
			// ids not in creation order
			id := fmt.Sprintf("r%04x", rng.Intn(1<<16)) + fmt.Sprintf("-%d", i)
			if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, lease_owner, lease_expires_at, next_attempt_at, created_at, updated_at)
				VALUES (?, ?, ?, 'h', '{}', 's', 'h', 'v', ?, ?, ?, ?, ?, ?)`), id, p, id, st, owner, exp, next, created, created); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range pipes {
			if k := rng.Intn(4); k < 2 {
				if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO pipeline_switches (pipeline, disabled, reason, actor, at) VALUES (?, ?, 'r', 'a', 0)`), p, k == 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		for k := 0; k < 40; k++ {
			var f domain.ClaimFilter
			if rng.Intn(2) == 0 {
				for _, p := range append(pipes, "zz") {
					if rng.Intn(2) == 0 {
						f.Pipelines = append(f.Pipelines, p)
					}
				}
				if len(f.Pipelines) > 0 && rng.Intn(4) == 0 {
					f.Pipelines = append(f.Pipelines, f.Pipelines[0])
				}
			}
			if rng.Intn(2) == 0 {
				f.MaxPerPipeline = 1 + rng.Intn(6)
			}
			n := []int{1, 2, 3, 5, 16, 64, 1000}[rng.Intn(7)]
			get := func(q string, args []any) string {
				var c []claimCandidate
				if err := s.db.SelectContext(ctx, &c, q, args...); err != nil {
					t.Fatalf("seed %d filter %+v n %d: %v\n%s", seed, f, n, err, q)
				}
				var out []string
				for _, x := range c {
					out = append(out, fmt.Sprintf("%s/%s/%s/%d/%s", x.ID, x.State, x.Owner, x.Expires, x.Pipeline))
				}
				return strings.Join(out, " ")
			}
			// The claim's own reading of the candidates (for a capped claim, the pipelines
			// below their cap first), in a transaction rolled back.
			tx, err := s.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			cands, err := s.claimCandidates(ctx, tx, now, f, n)
			tx.Rollback()
			if err != nil {
				t.Fatalf("seed %d filter %+v n %d: %v", seed, f, n, err)
			}
			var claimed []string
			for _, x := range cands {
				claimed = append(claimed, fmt.Sprintf("%s/%s/%s/%d/%s", x.ID, x.State, x.Owner, x.Expires, x.Pipeline))
			}
			got := strings.Join(claimed, " ")
			oq, oargs := oneConditionQuery(s, now, f, n)
			want := get(oq, oargs)
			total += strings.Count(want, "/") / 4
			if strings.Contains(want, "/processing/") {
				procs++
			}
			if got != want {
				t.Fatalf("seed %d filter %+v n %d:\nnew %s\nold %s", seed, f, n, got, want)
			}
			if s.dialect == "postgres" && f.MaxPerPipeline == 0 {
				// The one statement too, rolled back: the walk, and (unfiltered) the read of
				// each pipeline's queue as far as the window.
				windows := []int{0}
				if len(f.Pipelines) == 0 {
					windows = append(windows, claimWindow(n))
				}
				for _, window := range windows {
					if got := claimStatementIDs(t, s, now, f, n, window); got != candidateIDs(want) {
						t.Fatalf("seed %d filter %+v n %d, one statement (window %d):\nnew %s\nold %s", seed, f, n, window, got, candidateIDs(want))
					}
				}
			}
		}
		s.Close()
	}
	if total == 0 || procs == 0 {
		t.Fatalf("the random ledgers gave %d candidates, %d results with takeovers: nothing compared", total, procs)
	}
}

// TestSQLiteCappedClaimPastManyPipelines: a capped claim on a ledger of more pipelines than it
// reads one by one walks the whole queue instead, with the same candidates.
func TestSQLiteCappedClaimPastManyPipelines(t *testing.T) {
	ctx := context.Background()
	s := openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	seedQueued(t, s, 3*(maxPipelineBranches+6))
	for _, q := range []string{
		`UPDATE runs SET pipeline = 'p' || (CAST(substr(id, 2) AS INTEGER) % ` + fmt.Sprint(maxPipelineBranches+6) + `)`,
		`UPDATE runs SET state = 'processing', lease_owner = 'busy', lease_expires_at = 9999999999999 WHERE id IN ('q0000000', 'q0000001', 'q0000002')`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, ok, err := s.pipelinesToRead(ctx, tx, now, 1); ok || err != nil {
		t.Fatalf("%d pipelines read one by one (%v), want the walk", maxPipelineBranches+6, err)
	}
	f := domain.ClaimFilter{MaxPerPipeline: 1}
	cands, err := s.claimCandidates(ctx, tx, now, f, 16)
	if err != nil {
		t.Fatal(err)
	}
	var want []claimCandidate
	q, args := oneConditionQuery(s, now, f, 16)
	if err := tx.SelectContext(ctx, &want, q, args...); err != nil {
		t.Fatal(err)
	}
	if len(cands) != 16 || fmt.Sprint(cands) != fmt.Sprint(want) {
		t.Fatalf("claimed\n%v\nwant\n%v", cands, want)
	}
	for _, c := range cands {
		if c.Pipeline == "p0" || c.Pipeline == "p1" || c.Pipeline == "p2" {
			t.Fatalf("a pipeline at its cap gave %s", c.ID)
		}
	}
}

// candidateIDs keeps the ids of the candidates as the oracle test writes them (id/state/...).
func candidateIDs(cands string) string {
	var ids []string
	for _, c := range strings.Fields(cands) {
		id, _, _ := strings.Cut(c, "/")
		ids = append(ids, id)
	}
	return strings.Join(ids, " ")
}

// claimStatementIDs runs the one-statement claim of n in a transaction rolled back and returns
// the ids it claimed, in order.
func claimStatementIDs(t *testing.T, s *Store, now time.Time, f domain.ClaimFilter, n, window int) string {
	t.Helper()
	tx, err := s.claims.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	return strings.Join(claimInTx(t, tx, now, f, n, window), " ")
}

// claimInTx runs the one-statement claim of n in tx and returns the ids it claimed, in order.
func claimInTx(t *testing.T, tx *sqlx.Tx, now time.Time, f domain.ClaimFilter, n, window int) []string {
	t.Helper()
	rows, err := tx.QueryContext(context.Background(), claimSQL(n, len(f.Pipelines) > 0, window), claimArgs(ms(now), "w", ms(now)+60_000, f)...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		rest := make([]any, len(cols)-1) // a windowed claim adds how many due runs it read
		dest := []any{&id}
		for i := range rest {
			dest = append(dest, &rest[i])
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		if id != "" { // a windowed claim that took nothing returns a row of zeros
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}
