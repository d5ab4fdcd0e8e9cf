package ledger

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestClaimPlanWalksTheQueueWithoutStatistics: a queue filled faster than autovacuum analyzes
// looks empty to the planner, which then reads every queued run by bitmap and sorts them at
// each claim (9 ms a claim on 8,000 queued, where walking runs_claimable takes 0.2 ms). The
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
		if err := db.GetContext(ctx, &out, `EXPLAIN (FORMAT JSON) `+claimSQL(16, false), now, "w", now+60_000, abandonedReason); err != nil {
			t.Fatal(err)
		}
		return out
	}
	claims := plan(s.claims)
	if strings.Contains(claims, "Bitmap") || !strings.Contains(claims, `"Index Name": "runs_claimable"`) {
		t.Fatalf("the claim on 8,001 queued runs without statistics does not walk runs_claimable:\n%s", claims)
	}
	if other := plan(s.db); !strings.Contains(other, "Bitmap") {
		t.Logf("note: the ledger's other connections would walk the index too here; the claim pool's settings are not what this run shows")
	}
	var jit string
	if err := s.claims.GetContext(ctx, &jit, `SHOW jit`); err != nil || jit != "off" {
		t.Fatalf("jit on the claim connections: %q %v, want off (the claim's cost is never worth compiling)", jit, err)
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
