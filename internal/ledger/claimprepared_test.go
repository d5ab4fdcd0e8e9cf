package ledger

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/pipectl/pipectl/internal/domain"
)

// A SQLite claim runs statements prepared for its size, the sizes prepared as claims grow,
// and a claim larger than any prepared size runs its statements from their text: whichever
// way, each claim takes the oldest runs not yet taken, each once, and records one event each.
func TestSQLiteClaimsOfEverySizeTakeTheOldestOnce(t *testing.T) {
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	total := maxPreparedClaim + 100
	seedQueued(t, s, total)
	ctx := context.Background()
	next := 0
	for _, n := range []int{1, 3, 2, 5, maxPreparedClaim + 20, 4, maxPreparedClaim, 64} {
		runs, err := s.ClaimBatch(ctx, fmt.Sprintf("w%d", n), time.Now().Add(time.Minute), domain.ClaimFilter{}, n)
		if err != nil {
			t.Fatalf("claim of %d: %v", n, err)
		}
		want := min(n, total-next)
		if len(runs) != want {
			t.Fatalf("claim of %d took %d runs, want %d", n, len(runs), want)
		}
		for i, r := range runs {
			if id := fmt.Sprintf("q%07d", next+i); r.ID != id || r.State != domain.StateProcessing || r.LeaseOwner != fmt.Sprintf("w%d", n) {
				t.Fatalf("claim of %d, run %d: %s %s %q, want %s processing under w%d", n, i, r.ID, r.State, r.LeaseOwner, id, n)
			}
		}
		next += len(runs)
		if got := int(s.claimSizes.Load()); got < min(n, maxPreparedClaim) {
			t.Fatalf("after a claim of %d, statements prepared for claims of up to %d", n, got)
		}
	}
	if next != total {
		t.Fatalf("%d of %d runs claimed", next, total)
	}
	var events, processing int
	s.db.Get(&events, `SELECT COUNT(*) FROM run_events WHERE to_state = 'processing' AND reason LIKE 'claimed by w%'`)
	s.db.Get(&processing, `SELECT COUNT(*) FROM runs WHERE state = 'processing'`)
	if events != total || processing != total {
		t.Fatalf("%d claim events and %d runs processing, want %d", events, processing, total)
	}
	if got := s.claimSizes.Load(); got != maxPreparedClaim {
		t.Fatalf("statements prepared for claims of up to %d, want %d", got, maxPreparedClaim)
	}
}

// A SQLite claim's statements are compiled once, whatever the number of runs a claim asks
// for: SQLite compiles a statement again when another value is bound where its planner read
// the value, which it does for a bare LIMIT ?, and, on a ledger with ANALYZE's samples
// (sqlite_stat4), for a bare bound on an indexed column. The walk's limit is in its text, so
// on a ledger without samples nothing is compiled again. On a ledger with samples the walk is
// compiled at every claim, on purpose (its plan follows the samples and the claim's time), but
// the update, whose plan is the primary key's whatever the ids, is not. SQLite calls a
// connection's authorizer for every table a statement reads or updates, each time it compiles
// it: what it reports after the first claim of each size are compilations.
func TestSQLiteClaimsOfOtherSizesCompileNothingAgain(t *testing.T) {
	for _, analyzed := range []bool{false, true} {
		t.Run(fmt.Sprintf("analyzed=%v", analyzed), func(t *testing.T) {
			ctx := context.Background()
			s := openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "l.db"))
			seedQueued(t, s, 3000)
			if analyzed {
				// Retries and leases not yet due, so that the samples cover every state
				// the walk reads.
				for _, q := range []string{
					`UPDATE runs SET state = 'failed_transient', next_attempt_at = 9999999999999 WHERE CAST(substr(id, 2) AS INTEGER) % 11 = 0`,
					`UPDATE runs SET state = 'processing', lease_owner = 'live', lease_expires_at = 9999999999999 WHERE CAST(substr(id, 2) AS INTEGER) % 13 = 0`,
					`ANALYZE`,
				} {
					if _, err := s.db.ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				var samples int
				if err := s.db.GetContext(ctx, &samples, `SELECT COUNT(*) FROM sqlite_stat4`); err != nil || samples == 0 {
					t.Fatalf("ANALYZE left %d samples (%v): the case tests nothing", samples, err)
				}
			}
			var compiled, updates atomic.Int64
			conn, err := s.db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = conn.Raw(func(dc any) error {
				a, ok := dc.(sqlite.AuthorizerRegisterer)
				if !ok {
					return fmt.Errorf("driver connection %T has no authorizer", dc)
				}
				return a.RegisterAuthorizer(func(action sqlite.AuthorizerActionCode, table, _, _, _ string) sqlite.AuthorizerReturnCode {
					if action == sqlite.AuthRead && table == "runs" {
						compiled.Add(1)
					}
					if action == sqlite.AuthUpdate && table == "runs" {
						updates.Add(1)
					}
					return sqlite.AuthorizerOK
				})
			})
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			claim := func(n int) {
				t.Helper()
				runs, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{}, n)
				if err != nil || len(runs) != n {
					t.Fatalf("claim of %d: %d runs, %v", n, len(runs), err)
				}
			}
			// Setting the authorizer expired every prepared statement: the first claim of each
			// size compiles what it runs once more.
			for _, n := range []int{1, 2, 3, 5, 8} {
				claim(n)
			}
			before, updatesBefore := compiled.Load(), updates.Load()
			if before == 0 || updatesBefore == 0 {
				t.Fatal("the authorizer saw no statement compiled: it cannot tell compilations apart")
			}
			for _, n := range []int{8, 1, 5, 2, 3, 1, 8, 8} {
				claim(n)
				// On a coarse clock two claims may bind the same time.
				time.Sleep(2 * time.Millisecond)
			}
			if got := updates.Load() - updatesBefore; got != 0 {
				t.Errorf("claims of sizes claimed before compiled their update again: %d updates of runs authorized", got)
			}
			if got := compiled.Load() - before; got != 0 && !analyzed {
				t.Errorf("claims of sizes claimed before compiled statements again: %d reads of runs authorized", got)
			}
		})
	}
}

// A capped claim walks only the pipelines with room, a text of its own at each claim: it keeps
// no prepared walk it would never run (one per claim size, up to 128, each compiled once).
func TestSQLiteCappedClaimsKeepNoWalkPrepared(t *testing.T) {
	ctx := context.Background()
	s := openOrFail(t, "sqlite:"+filepath.Join(t.TempDir(), "l.db"))
	seedQueued(t, s, 100)
	walks := func() int {
		n := 0
		s.claimStmts.Range(func(q, _ any) bool {
			if strings.HasPrefix(q.(string), "SELECT id, state, lease_owner, lease_expires_at, pipeline FROM (") {
				n++
			}
			return true
		})
		return n
	}
	for n := 1; n <= 4; n++ {
		if _, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{MaxPerPipeline: 50}, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := walks(); got != 0 {
		t.Errorf("capped claims of 4 sizes kept %d walks prepared, want none", got)
	}
	// Uncapped, each size keeps its own.
	for n := 1; n <= 4; n++ {
		if _, err := s.ClaimBatch(ctx, "w", time.Now().Add(time.Minute), domain.ClaimFilter{}, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := walks(); got != 4 {
		t.Errorf("claims of 4 sizes kept %d walks prepared, want 4", got)
	}
}
