package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestFinishingClaimPlansReadIndexes: the plans a finishing claim's connection keeps for its
// locks, made on a fresh ledger where a bulk submit queued thousands of runs with one created_at
// and step_attempts is empty, as a backfill starts. Three of them drained such a queue at
// 700-1,500 runs/s instead of 4,000-6,000: one read the queue in runs_created and sorted each
// group of runs with the same created_at; one checked whether a run had begun by reading
// step_attempts whole, which the drain grew by thousands of rows a second; and a later lock's
// bound on created_at had the planner read runs_created from there, sorting the rest of the
// queue. Each lock must read runs_ready in order, the expired leases in runs_leases, and
// step_attempts by run, and nothing whole. (The first of the three, the sort of each group,
// does not show on this small queue: its settings were checked on a drain of 20,000 runs
// queued by `submit --inputs`, docs/scaling.md.)
func TestFinishingClaimPlansReadIndexes(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	queueRuns(t, s, "p", 1, 1000)
	for _, q := range []string{
		// As `submit --inputs` queues them: a created_at per thousand runs.
		`INSERT INTO runs SELECT (jsonb_populate_record(r, jsonb_build_object('id', r.id || '-' || g,
			'idempotency_key', r.idempotency_key || '-' || g, 'created_at', r.created_at + g / 1000))).*
			FROM runs r, generate_series(1, 20000) g`,
		`ANALYZE runs`, `ANALYZE step_attempts`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := s.claims.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	now := time.Now().UnixMilli()
	for _, c := range []struct {
		name, params, args string
		more               bool
	}{
		{"first", "bigint", fmt.Sprint(now), false},
		{"more", "bigint, text[]", fmt.Sprintf("%d, ARRAY['p-01']", now), true},
	} {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PREPARE lock_%s(%s) AS %s`, c.name, c.params, lockSQL(32, false, c.more))); err != nil {
			t.Fatal(err)
		}
		var plan string
		err := conn.GetContext(ctx, &plan, fmt.Sprintf(`EXPLAIN (FORMAT JSON) EXECUTE lock_%s(%s)`, c.name, c.args))
		conn.ExecContext(ctx, `DEALLOCATE lock_`+c.name)
		if err != nil {
			t.Fatal(err)
		}
		wants := []string{`"Index Name": "runs_ready"`, `"Relation Name": "step_attempts"`}
		if !c.more {
			wants = append(wants, `"Index Name": "runs_leases"`) // a later lock takes no lease over
		}
		for _, want := range wants {
			if !strings.Contains(plan, want) {
				t.Fatalf("the %s lock's generic plan lacks %s:\n%s", c.name, want, plan)
			}
		}
		for _, bad := range []string{`"Seq Scan"`, `"Incremental Sort"`, `"runs_created"`, `"Bitmap`} {
			if strings.Contains(plan, bad) {
				t.Fatalf("the %s lock's generic plan has %s:\n%s", c.name, bad, plan)
			}
		}
	}
	// And the claim takes them in order, 32 at a time, up to 128.
	var offered []string
	inner := finishAs(&offered)
	all := func(ctx context.Context, r *domain.Run) *domain.Finished {
		pure := *r
		pure.IdempotencyKey += "-s"
		f := inner(ctx, &pure)
		f.Run = r
		return f
	}
	_, finished, full, err := s.ClaimFinishing(ctx, ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 32, 128, all)
	if err != nil || len(finished) != 128 || !full || offered[0] != "p-01" || offered[1] != "p-01-1" || offered[2] != "p-01-10" || offered[3] != "p-01-100" {
		t.Fatalf("finished %d (full %v, %v), offered from %v", len(finished), full, err, offered[:min(3, len(offered))])
	}
}
