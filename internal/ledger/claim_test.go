package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// seedQueued bulk-inserts queued runs.
func seedQueued(b testing.TB, s *Store, n int) {
	b.Helper()
	now := time.Now().UnixMilli() - int64(n)
	err := s.inTx(context.Background(), func(tx *sqlx.Tx) error {
		for start := 0; start < n; start += 1000 {
			q := `INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at) VALUES `
			var args []any
			for i := start; i < min(start+1000, n); i++ {
				if i > start {
					q += ", "
				}
				q += "(?, 'bench', ?, 'h', '{}', 's', 'h', 'b', 'queued', ?, ?)"
				id := fmt.Sprintf("q%07d", i)
				args = append(args, id, id, now+int64(i), now+int64(i))
			}
			if _, err := tx.ExecContext(context.Background(), s.db.Rebind(q), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if s.dialect == "postgres" {
		s.db.Exec(`ANALYZE runs`)
	}
}

// openBenchPostgres opens a PostgreSQL ledger in a schema of its own, closed when b ends.
func openBenchPostgres(b *testing.B) *Store {
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		b.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	s, err := Open(context.Background(), PostgresTestSchema(b, dsn))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// openBenchSQLite opens a SQLite ledger file of its own at synchronous=NORMAL, closed when b
// ends.
func openBenchSQLite(b *testing.B) *Store {
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "ledger.db")+"?synchronous=normal")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// benchClaim claims n runs at a time from a queue of queued runs, as a worker with n free
// slots does, and reports the latency of one claim (p50-ms, p95-ms). The runs claimed are
// queued again after each claim (not timed), so that the queue keeps its length.
func benchClaim(b *testing.B, s *Store, queued, n int) {
	seedQueued(b, s, queued)
	ctx := context.Background()
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		runs, err := s.ClaimBatch(ctx, "bench-worker", time.Now().Add(time.Minute), domain.ClaimFilter{}, n)
		if err != nil || len(runs) != n {
			b.Fatalf("%d runs claimed, want %d: %v", len(runs), n, err)
		}
		times = append(times, time.Since(start))
		ids := make([]string, len(runs))
		for i, r := range runs {
			ids[i] = r.ID
		}
		q, args := s.inList(`UPDATE runs SET state = 'queued', lease_owner = '', lease_expires_at = 0 WHERE id %s`, ids)
		if _, err := s.db.ExecContext(ctx, q, args...); err != nil {
			b.Fatal(err)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[len(times)*95/100].Microseconds())/1000, "p95-ms")
}

// BenchmarkClaim1kQueued and BenchmarkClaim100kQueued compare the claim latency of a worker
// with a short and a long queue, one run at a time and 16 at a time, on PostgreSQL and on
// SQLite.
func BenchmarkClaim1kQueued(b *testing.B)             { benchClaim(b, openBenchPostgres(b), 1_000, 1) }
func BenchmarkClaim100kQueued(b *testing.B)           { benchClaim(b, openBenchPostgres(b), 100_000, 1) }
func BenchmarkClaim16Of1kQueued(b *testing.B)         { benchClaim(b, openBenchPostgres(b), 1_000, 16) }
func BenchmarkClaim16Of100kQueued(b *testing.B)       { benchClaim(b, openBenchPostgres(b), 100_000, 16) }
func BenchmarkClaim1kQueuedSQLite(b *testing.B)       { benchClaim(b, openBenchSQLite(b), 1_000, 1) }
func BenchmarkClaim100kQueuedSQLite(b *testing.B)     { benchClaim(b, openBenchSQLite(b), 100_000, 1) }
func BenchmarkClaim16Of1kQueuedSQLite(b *testing.B)   { benchClaim(b, openBenchSQLite(b), 1_000, 16) }
func BenchmarkClaim16Of100kQueuedSQLite(b *testing.B) { benchClaim(b, openBenchSQLite(b), 100_000, 16) }

// BenchmarkClaimCappedBehindBusy is a capped claim (--max-per-pipeline 5) on a ledger where
// one pipeline has 20,000 runs busy and 5,000 queued ahead of another pipeline's 1,000: each
// claim walks past the capped pipeline's queued runs to take the other's (PostgreSQL).
func BenchmarkClaimCappedBehindBusy(b *testing.B) {
	s := openBenchPostgres(b)
	seedQueued(b, s, 26_000)
	for _, q := range []string{
		`UPDATE runs SET pipeline = 'other' WHERE id >= 'q0025000'`,
		`UPDATE runs SET state = 'processing', lease_owner = 'busy', lease_expires_at = 9999999999999 WHERE id < 'q0020000'`,
		`ANALYZE runs`,
	} {
		if _, err := s.db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	f := domain.ClaimFilter{MaxPerPipeline: 5}
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		runs, err := s.ClaimBatch(context.Background(), "w", time.Now().Add(time.Minute), f, 16)
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		// Free the other pipeline's slots again: only the walk is measured.
		for _, r := range runs {
			if _, err := s.db.Exec(`UPDATE runs SET state = 'succeeded', lease_owner = '' WHERE id = $1`, r.ID); err != nil {
				b.Fatal(err)
			}
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
}

// BenchmarkClaimCappedBacklog{,SQLite} and BenchmarkClaimSwitchedOffBacklog{,SQLite} claim 16
// runs on a ledger where one pipeline has 100,000 runs queued ahead of another's and may not
// give any: it is at its cap (--max-per-pipeline 5, 5 busy), or switched off.
func BenchmarkClaimCappedBacklogSQLite(b *testing.B) {
	benchClaimPastBacklog(b, openBenchSQLite(b), domain.ClaimFilter{MaxPerPipeline: 5}, 5, false)
}

func BenchmarkClaimSwitchedOffBacklogSQLite(b *testing.B) {
	benchClaimPastBacklog(b, openBenchSQLite(b), domain.ClaimFilter{}, 16, true)
}

func BenchmarkClaimCappedBacklog(b *testing.B) {
	benchClaimPastBacklog(b, openBenchPostgres(b), domain.ClaimFilter{MaxPerPipeline: 5}, 5, false)
}

func BenchmarkClaimSwitchedOffBacklog(b *testing.B) {
	benchClaimPastBacklog(b, openBenchPostgres(b), domain.ClaimFilter{}, 16, true)
}

func benchClaimPastBacklog(b *testing.B, s *Store, f domain.ClaimFilter, want int, off bool) {
	seedQueued(b, s, 101_000)
	for _, q := range []string{
		`UPDATE runs SET pipeline = 'other' WHERE id >= 'q0100000'`,
		`UPDATE runs SET state = 'processing', lease_owner = 'busy', lease_expires_at = 9999999999999 WHERE id < 'q0000005'`,
	} {
		if _, err := s.db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	if off {
		if err := s.SetPipelineDisabled(context.Background(), "bench", true, "bench", "ops"); err != nil {
			b.Fatal(err)
		}
	}
	var times []time.Duration
	for b.Loop() {
		start := time.Now()
		runs, err := s.ClaimBatch(context.Background(), "w", time.Now().Add(time.Minute), f, 16)
		if err != nil || len(runs) != want || runs[0].Pipeline != "other" {
			b.Fatalf("claimed %d runs (%v), want %d of other", len(runs), err, want)
		}
		times = append(times, time.Since(start))
		// Queue them again, which frees the other pipeline's slots: only the walk is measured,
		// and the other pipeline's 1,000 runs last however many claims are timed (marked
		// succeeded, they ran out at the 63rd claim of 16).
		for _, r := range runs {
			if _, err := s.db.Exec(s.db.Rebind(`UPDATE runs SET state = 'queued', lease_owner = '', lease_expires_at = 0 WHERE id = ?`), r.ID); err != nil {
				b.Fatal(err)
			}
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
}

// TestRunRowDestFollowsRunColumns: a claim scans runColumns into runRow.dest() by position, so
// the two must list the same columns in the same order.
func TestRunRowDestFollowsRunColumns(t *testing.T) {
	var r runRow
	dest := r.dest()
	cols := strings.Split(strings.Join(strings.Fields(runColumns), ""), ",")
	rt := reflect.TypeOf(r)
	if len(dest) != len(cols) || rt.NumField() != len(cols) {
		t.Fatalf("%d destinations, %d fields, %d columns", len(dest), rt.NumField(), len(cols))
	}
	rv := reflect.ValueOf(&r).Elem()
	for i, c := range cols {
		f := rt.Field(i)
		if f.Tag.Get("db") != c {
			t.Fatalf("field %d is %s (%q), column %d is %q", i, f.Name, f.Tag.Get("db"), i, c)
		}
		if dest[i] != rv.Field(i).Addr().Interface() {
			t.Fatalf("destination %d is not the field %s of column %s", i, f.Name, c)
		}
	}
}
