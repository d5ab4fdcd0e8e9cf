package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestClaimPlanWalksTheQueueWithoutStatistics: a queue filled faster than autovacuum analyzes
// looks empty to the planner, which then reads every queued run by bitmap and sorts them at
// each claim (9 ms a claim on 8,000 queued, where walking runs_ready takes 0.2 ms). The
// claim's connections must walk the index in order whatever the statistics say.
func TestClaimPlanWalksTheQueueWithoutStatistics(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`ALTER TABLE runs SET (autovacuum_enabled = false)`)
	queueRuns(t, s, "p", 1, 1000)
	exec(`INSERT INTO runs SELECT (jsonb_populate_record(r, jsonb_build_object('id', r.id || '-' || g,
		'idempotency_key', r.idempotency_key || '-' || g, 'created_at', r.created_at + g))).*
		FROM runs r, generate_series(1, 8000) g`)
	plan := func(db *sqlx.DB) string {
		t.Helper()
		var out string
		now := time.Now().UnixMilli()
		if err := db.GetContext(ctx, &out, `EXPLAIN (FORMAT JSON) `+claimSQL(16, false, 0), now, "w", now+60_000, abandonedReason); err != nil {
			t.Fatal(err)
		}
		return out
	}
	claims := plan(s.claims)
	if strings.Contains(claims, "Bitmap") || !strings.Contains(claims, `"Index Name": "runs_ready"`) {
		t.Fatalf("the claim on 8,001 queued runs without statistics does not walk runs_ready:\n%s", claims)
	}
	if other := plan(s.db); !strings.Contains(other, "Bitmap") {
		t.Logf("note: the ledger's other connections would walk the index too here; the claim pool's settings are not what this run shows")
	}
	var jit, planMode string
	if err := s.claims.GetContext(ctx, &jit, `SHOW jit`); err != nil || jit != "off" {
		t.Fatalf("jit on the claim connections: %q %v, want off (the claim's cost is never worth compiling)", jit, err)
	}
	// The claim connections plan each claim size once, generically: that plan, which every
	// claim then takes, must walk the index too.
	if err := s.claims.GetContext(ctx, &planMode, `SHOW plan_cache_mode`); err != nil || planMode != "force_generic_plan" {
		t.Fatalf("plan_cache_mode on the claim connections: %q %v", planMode, err)
	}
	conn, err := s.claims.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `PREPARE generic_claim(bigint, text, bigint, text) AS `+claimSQL(16, false, 0)); err != nil {
		t.Fatal(err)
	}
	var generic string
	now := time.Now().UnixMilli()
	err = conn.GetContext(ctx, &generic, fmt.Sprintf(`EXPLAIN (FORMAT JSON) EXECUTE generic_claim(%d, 'w', %d, 'x')`, now, now+60_000))
	conn.ExecContext(ctx, `DEALLOCATE generic_claim`)
	conn.Close()
	if err != nil || strings.Contains(generic, "Bitmap") || !strings.Contains(generic, `"Index Name": "runs_ready"`) ||
		!strings.Contains(generic, `"Index Name": "runs_leases"`) {
		t.Fatalf("the generic plan of a claim does not walk runs_ready and look expired leases up in runs_leases (%v):\n%s", err, generic)
	}
	runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{}, 16)
	if err != nil || len(runs) != 16 || runs[0].ID != "p-01" {
		t.Fatalf("claimed %d runs (%v), want the 16 oldest from p-01", len(runs), err)
	}
	// A capped claim (a transaction on the ledger's own connections) takes the next in order.
	runs, err = s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{MaxPerPipeline: 20}, 16)
	if err != nil || len(runs) != 4 || runs[0].ID != "p-01-16" {
		t.Fatalf("capped claim: %d runs (%v), want the 4 the cap of 20 leaves, from p-01-16", len(runs), err)
	}
}

// TestSQLiteClaimWalksTheQueueInOrder: given the three due states as one condition, SQLite read
// every due run and sorted them at each claim (44 ms a claim with 100,000 queued). The claim
// reads each state in order on its own and merges them; it must take exactly the runs, in
// exactly the order, that the one condition takes, whatever the filters, and walk runs_queued
// (or, limited to some pipelines, each one's queued runs in runs_window).
func TestSQLiteClaimWalksTheQueueInOrder(t *testing.T) {
	s := openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	ctx := context.Background()
	// The plans do not depend on the size: without ANALYZE SQLite assumes fixed sizes.
	seedQueued(t, s, 600)
	// Every state a claim must take or pass over, spread through the queue, and pipelines
	// filtered out or switched off.
	for _, q := range []string{
		`UPDATE runs SET pipeline = 'other' WHERE CAST(substr(id, 2) AS INTEGER) % 5 = 0`,
		`UPDATE runs SET pipeline = 'off' WHERE CAST(substr(id, 2) AS INTEGER) % 23 = 0`,
		`INSERT INTO pipeline_switches (pipeline, disabled, reason, actor, at) VALUES ('off', 1, 'r', 'a', 0)`,
		`UPDATE runs SET state = 'failed_transient', next_attempt_at = 1 WHERE CAST(substr(id, 2) AS INTEGER) % 7 = 0`,
		`UPDATE runs SET state = 'failed_transient', next_attempt_at = 9999999999999 WHERE CAST(substr(id, 2) AS INTEGER) % 11 = 0`,
		`UPDATE runs SET state = 'processing', lease_owner = 'dead', lease_expires_at = 1 WHERE CAST(substr(id, 2) AS INTEGER) % 13 = 0`,
		`UPDATE runs SET state = 'processing', lease_owner = 'live', lease_expires_at = 9999999999999 WHERE CAST(substr(id, 2) AS INTEGER) % 17 = 0`,
		`UPDATE runs SET state = 'succeeded', finished_at = created_at + 1 WHERE CAST(substr(id, 2) AS INTEGER) % 19 = 0`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	oneCondition := func(now time.Time, f domain.ClaimFilter, n int) (string, []any) {
		return oneConditionQuery(s, now, f, n)
	}
	ids := func(q string, args []any) []string {
		t.Helper()
		var cands []claimCandidate
		if err := s.db.SelectContext(ctx, &cands, q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
		out := make([]string, len(cands))
		for i, c := range cands {
			out[i] = c.ID + "/" + c.State
		}
		return out
	}
	now := time.Now()
	for _, f := range []domain.ClaimFilter{{}, {Pipelines: []string{"other", "off"}}, {MaxPerPipeline: 30}, {MaxPerPipeline: 40, Pipelines: []string{"bench"}}} {
		for _, n := range []int{1, 5, 16, 100} {
			q, args := s.candidatesQuery(now, f, n)
			got := ids(q, args)
			want := ids(oneCondition(now, f, n))
			if len(want) == 0 || strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("filter %+v, %d: claimed\n%v\nwhere the one condition takes\n%v", f, n, got, want)
			}
			var plan []struct {
				ID, Parent, Notused int
				Detail              string
			}
			if err := s.db.SelectContext(ctx, &plan, "EXPLAIN QUERY PLAN "+q, args...); err != nil {
				t.Fatal(err)
			}
			var details []string
			for _, p := range plan {
				details = append(details, p.Detail)
			}
			text := strings.Join(details, "\n")
			// The whole queue in order, or, for a worker limited to some pipelines, each
			// one's queued runs in order: never every due run sorted.
			walk := "SCAN runs USING INDEX runs_queued"
			if len(f.Pipelines) > 0 {
				walk = "SEARCH runs USING INDEX runs_window (pipeline=? AND state=?)"
			}
			if strings.Count(text, walk) < max(len(f.Pipelines), 1) || strings.Contains(text, "MULTI-INDEX OR") ||
				(len(f.Pipelines) > 0 && strings.Contains(text, "runs_queued")) {
				t.Fatalf("filter %+v: the claim does not walk the queue in order:\n%s", f, text)
			}
		}
	}
	// Claimed in batches until nothing is due, the runs come in the order of the queue.
	want := ids(oneCondition(now, domain.ClaimFilter{}, 10_000))
	var got []string
	for {
		runs, err := s.ClaimBatch(ctx, "w", now.Add(time.Hour), domain.ClaimFilter{}, 16)
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) == 0 {
			break
		}
		for _, r := range runs {
			got = append(got, r.ID)
		}
	}
	for i := range want {
		want[i], _, _ = strings.Cut(want[i], "/")
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("claimed %d runs in batches, want the %d due in queue order", len(got), len(want))
	}
}

// TestSQLiteClaimUpdatesFindRunsByID: with a dozen ids or more, SQLite answered the claim's
// "state IN (...) AND id IN (...)" by reading every queued run through runs_state_due.
func TestSQLiteClaimUpdatesFindRunsByID(t *testing.T) {
	s := openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"))
	seedQueued(t, s, 3000)
	now := time.Now()
	for _, n := range []int{1, 4, 16, 64} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("q%07d", i)
		}
		for name, build := range map[string]func([]string, string, time.Time, time.Time) (string, []any){
			"fresh": s.claimFreshQuery, "expired": s.claimExpiredQuery,
		} {
			q, args := build(ids, "w", now, now)
			var plan []struct {
				ID, Parent, Notused int
				Detail              string
			}
			if err := s.db.Select(&plan, "EXPLAIN QUERY PLAN "+q, args...); err != nil {
				t.Fatal(err)
			}
			if len(plan) == 0 || !strings.Contains(plan[0].Detail, "(id=?)") {
				t.Fatalf("%s claim of %d runs: %+v, want a search by id", name, n, plan)
			}
		}
	}
}

// TestFilteredClaimReadsItsPipelinesOnly: a worker limited to one pipeline (--pipelines small)
// behind a backlog of another's. The claim connections plan claims once, without their
// arguments; for a claim limited to some pipelines such a plan walks the whole queue in claim
// order and passes every run of the others (200,000: 45-95 ms a claim). It must read the
// pipeline's own runs, with and without statistics.
func TestFilteredClaimReadsItsPipelinesOnly(t *testing.T) {
	for _, analyzed := range []bool{false, true} {
		t.Run(fmt.Sprint("analyzed=", analyzed), func(t *testing.T) {
			s := openOrFail(t, postgresOrSkip(t))
			ctx := context.Background()
			now := time.Now().UnixMilli()
			for _, q := range []string{
				`ALTER TABLE runs SET (autovacuum_enabled = false)`,
				`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at)
				SELECT 'b-' || lpad(g::text, 7, '0'), 'big', 'k' || g, 'h', '{}', 's', 'sh', 't', 'queued', $1::bigint + g, $1::bigint + g FROM generate_series(1, 200000) g`,
				`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at)
				SELECT 's-' || lpad(g::text, 7, '0'), 'small', 'k' || g, 'h', '{}', 's', 'sh', 't', 'queued', $1::bigint + 300000 + g, $1::bigint + g FROM generate_series(1, 100) g`,
			} {
				var args []any
				if strings.Contains(q, "$1") {
					args = append(args, now-1_000_000)
				}
				if _, err := s.db.Exec(q, args...); err != nil {
					t.Fatal(err)
				}
			}
			if analyzed {
				if _, err := s.db.Exec(`ANALYZE runs`); err != nil {
					t.Fatal(err)
				}
			}
			f := domain.ClaimFilter{Pipelines: []string{"small"}}
			// The claim as ClaimBatch makes it, in a transaction rolled back, with the rows of
			// runs it fetched counted by the server for that transaction.
			tx, err := s.claims.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			rows, err := tx.QueryContext(ctx, claimSQL(16, true, 0), claimArgs(now, "w", now+60_000, f)...)
			if err != nil {
				t.Fatal(err)
			}
			claimed := 0
			for rows.Next() {
				claimed++
			}
			rows.Close()
			var fetched int
			if err := tx.GetContext(ctx, &fetched, `SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM pg_stat_xact_user_tables WHERE relid = 'runs'::regclass`); err != nil {
				t.Fatal(err)
			}
			if claimed != 16 || fetched > 5000 {
				t.Fatalf("a claim of %d runs of one pipeline fetched %d rows of runs (200,100 queued, 100 of its pipeline)", claimed, fetched)
			}
			t.Logf("a claim of 16 fetched %d rows of runs", fetched)
			tx.Rollback()
			runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), f, 16)
			if err != nil || len(runs) != 16 || runs[0].ID != "s-0000001" {
				t.Fatalf("claimed %d runs (%v), want the 16 oldest of small", len(runs), err)
			}
		})
	}
}

// TestFilteredClaimTakesNamesAsNames: a limited claim's pipeline names reach the server inside
// the statement's text (see claimArgs), quoted by the driver. Names with quotes, backslashes,
// braces and SQL in them are names: the claim takes the runs of exactly that pipeline, and
// nothing else happens.
func TestFilteredClaimTakesNamesAsNames(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	odd := []string{`it's "odd" \ {x}, y`, `x'); DELETE FROM runs; --`, `\'); DELETE FROM runs; --`, "{}", "NULL", "é"}
	for i, p := range odd {
		r := newRun(t, p, fmt.Sprint("k", i))
		if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range odd {
		runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{p, "none"}}, 4)
		if err != nil || len(runs) != 1 || runs[0].Pipeline != p {
			t.Fatalf("claim of pipeline %q: %d runs (%v)", p, len(runs), err)
		}
		var left int
		if err := s.db.Get(&left, `SELECT count(*) FROM runs`); err != nil || left != len(odd) {
			t.Fatalf("after claiming %q: %d runs in the ledger (%v)", p, left, err)
		}
	}
}

// TestFilteredClaimWithNonstandardStrings: a limited claim goes by the simple protocol, which
// the driver refuses on a connection whose strings are not standard. A ledger whose database
// or DSN sets standard_conforming_strings off must still claim (found by a review).
func TestFilteredClaimWithNonstandardStrings(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t)+"&standard_conforming_strings=off")
	ctx := context.Background()
	r := newRun(t, `it's \ odd`, "k")
	if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
		t.Fatal(err)
	}
	runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{Pipelines: []string{`it's \ odd`}}, 4)
	if err != nil || len(runs) != 1 {
		t.Fatalf("claimed %d runs (%v)", len(runs), err)
	}
}
