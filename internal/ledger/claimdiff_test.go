package ledger

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestClaimStatementMatchesTransaction builds one mixed situation on two PostgreSQL ledgers
// and claims it with the one-statement claim (no cap) and with the transaction (a cap no
// pipeline reaches): every row of runs, run_events and step_attempts must end up the same.
func TestClaimStatementMatchesTransaction(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	dump := func(f domain.ClaimFilter) string {
		s := openOrFail(t, postgresOrSkip(t))
		s.now = func() time.Time { return base }
		ctx := context.Background()
		queueRuns(t, s, "a", 3, 1000)
		b := queueRuns(t, s, "b", 2, 900)
		c := queueRuns(t, s, "c", 4, 800)
		off := queueRuns(t, s, "off", 2, 700)
		if err := s.SetPipelineDisabled(ctx, "off", true, "m", "ops"); err != nil {
			t.Fatal(err)
		}
		exec := func(q string, args ...any) {
			if _, err := s.db.Exec(s.db.Rebind(q), args...); err != nil {
				t.Fatal(err)
			}
		}
		exec(`UPDATE runs SET state = 'failed_transient', next_attempt_at = ? WHERE id = ?`, base.UnixMilli()-1, b[0])
		exec(`UPDATE runs SET state = 'failed_transient', next_attempt_at = ? WHERE id = ?`, base.UnixMilli(), b[1])
		for _, id := range []string{c[0], c[1], c[2], c[3], off[0]} {
			exec(`UPDATE runs SET state = 'processing', lease_owner = ?, lease_expires_at = ?, next_attempt_at = 77 WHERE id = ?`, "dead-"+id, base.UnixMilli()-1, id)
			switch id {
			case c[1]:
				exec(`UPDATE runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?`, "gone-"+id, handedBack, id)
			case c[3]:
				// Enqueued by an operator: no owner, handed to whichever worker comes.
				exec(`UPDATE runs SET lease_owner = '', lease_expires_at = ? WHERE id = ?`, handedBack, id)
			}
			for i, o := range []string{"succeeded", "running"} {
				exec(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, outcome) VALUES (?, ?, -1, 1, ?, 5, ?)`, id, "s"+string(rune('0'+i)), "k"+id, string(o))
			}
		}
		exec(`UPDATE runs SET lease_expires_at = ? WHERE id = ?`, base.UnixMilli(), c[2]) // not expired (< now only)
		for _, n := range []int{1, 2, 10, 10} {
			if _, err := s.ClaimBatch(ctx, "w", base.Add(time.Minute), f, n); err != nil {
				t.Fatal(err)
			}
		}
		var out []string
		for _, q := range []string{
			`SELECT row_to_json(r)::text FROM runs r ORDER BY id`,
			`SELECT row_to_json(e)::text FROM (SELECT run_id, from_state, to_state, reason, actor, at FROM run_events ORDER BY id) e`,
			`SELECT row_to_json(x)::text FROM (SELECT * FROM step_attempts ORDER BY id) x`,
		} {
			var rows []string
			if err := s.db.Select(&rows, q); err != nil {
				t.Fatal(err)
			}
			out = append(out, rows...)
		}
		return strings.Join(out, "\n")
	}
	for _, pipes := range [][]string{nil, {"c", "off", "b"}} {
		one := dump(domain.ClaimFilter{Pipelines: pipes})
		tx := dump(domain.ClaimFilter{Pipelines: pipes, MaxPerPipeline: 1000})
		if one != tx {
			t.Fatalf("filter %v:\none statement:\n%s\ntransaction:\n%s", pipes, one, tx)
		}
		if !strings.Contains(one, "taken over from dead-c-01 (lease expired) by w") || !strings.Contains(one, "(dead-c-01)") ||
			!strings.Contains(one, "taken over from gone-c-02 (handed back) by w") || !strings.Contains(one, "taken over (handed back) by w") {
			t.Fatalf("no takeover:\n%s", one)
		}
	}
}
