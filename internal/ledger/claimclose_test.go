package ledger

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// A claim on PostgreSQL commits in one statement, then closes the attempts that the old owner
// of a run it took over left running. When that close fails, the run taken over is left for
// its lease to run out, and the other runs of the claim are still returned to be run: they
// were dropped with it before, and waited a whole lease for nothing.
func TestClaimKeepsItsRunsWhenATakeoverCannotBeClosed(t *testing.T) {
	s := openOrFail(t, postgresOrSkip(t))
	ctx := context.Background()
	seedQueued(t, s, 2) // q0000000 (older), q0000001
	expired := time.Now().Add(-time.Minute).UnixMilli()
	for _, q := range []string{
		`UPDATE runs SET state = 'processing', lease_owner = 'dead-worker', lease_expires_at = ` + strconv.FormatInt(expired, 10) + ` WHERE id = 'q0000000'`,
		`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, outcome) VALUES ('q0000000', 's', -1, 1, 'k', 5, 'running')`,
		// The fault: the close that follows the claim statement (and only it) fails.
		`CREATE FUNCTION refuse_close() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
			IF current_query() LIKE '%error = $2 || %' THEN RAISE EXCEPTION 'injected: the ledger refused the close'; END IF;
			RETURN NULL; END $$`,
		`CREATE TRIGGER refuse_close BEFORE UPDATE ON step_attempts FOR EACH STATEMENT EXECUTE FUNCTION refuse_close()`,
	} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	runs, err := s.ClaimBatch(ctx, "w1", time.Now().Add(time.Minute), domain.ClaimFilter{}, 2)
	if err == nil || !strings.Contains(err.Error(), "q0000000") || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("claim error = %v, want the failed close of q0000000", err)
	}
	if len(runs) != 1 || runs[0].ID != "q0000001" || runs[0].LeaseOwner != "w1" || !runs[0].Unstarted {
		t.Fatalf("claimed %+v, want q0000001 under w1, to be started", runs)
	}
	// The run taken over is w1's in the ledger, not run: its lease runs out, and it is taken
	// over again; the attempt the claim statement saw running was closed by the statement.
	var state, owner, outcome string
	s.db.QueryRow(`SELECT state, lease_owner FROM runs WHERE id = 'q0000000'`).Scan(&state, &owner)
	s.db.QueryRow(`SELECT outcome FROM step_attempts WHERE run_id = 'q0000000'`).Scan(&outcome)
	if state != "processing" || owner != "w1" || outcome != "abandoned" {
		t.Fatalf("q0000000: %s under %q, attempt %s", state, owner, outcome)
	}
}
