package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// benchLines is the size of one file of BenchmarkSubmitInputs: large enough that opening the
// ledger and parsing the pipeline weigh little.
const benchLines = 20000

// BenchmarkSubmitInputs is `pipectl submit FILE --inputs FILE.jsonl` in this process, the
// whole command (pipeline parse, ledger open, every line checked against the inputs schema and
// keyed by its CEL rule, batches of 500), each iteration a new file of 20,000 distinct tickets
// into the same ledger. Beside runs/s it reports the raw floor of the same database in the same
// run: single-row INSERTs, each its own commit, over one connection (SQLite: the ledger's own
// connection, synchronous=FULL; PostgreSQL: one connection to the same schema), the load
// average, since the two cores are shared, and the CPU time pipectl spent per run (user and
// system, the database server's not included).
func BenchmarkSubmitInputs(b *testing.B) {
	for backend, dsnFor := range map[string]func(b *testing.B, dir string) string{
		"sqlite-full": func(b *testing.B, dir string) string { return "sqlite:" + filepath.Join(dir, "ledger.db") },
		"postgres": func(b *testing.B, _ string) string {
			dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
			if dsn == "" {
				b.Skip("PIPECTL_TEST_POSTGRES is not set")
			}
			return ledger.PostgresTestSchema(b, dsn)
		},
	} {
		b.Run(backend, func(b *testing.B) {
			dir := b.TempDir()
			dsn := dsnFor(b, dir)
			spec := filepath.Join(dir, "pipeline.yaml")
			if err := os.WriteFile(spec, []byte(bulkSpec), 0o644); err != nil {
				b.Fatal(err)
			}
			floor := benchCommitFloor(b, dsn, 2*time.Second)
			iter := 0
			var cpu time.Duration
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				path := benchInputs(b, dir, iter)
				b.StartTimer()
				var out, errOut bytes.Buffer
				before := processCPU()
				code := run(context.Background(), []string{"--ledger", dsn, "submit", spec, "--inputs", path}, strings.NewReader(""), &out, &errOut)
				if code != 0 || !strings.Contains(out.String(), fmt.Sprintf("%d created", benchLines)) {
					b.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
				}
				cpu += processCPU() - before
				iter++
			}
			runs := float64(iter*benchLines) / b.Elapsed().Seconds()
			b.ReportMetric(runs, "runs/s")
			b.ReportMetric(floor, "floor-commits/s")
			b.ReportMetric(runs/floor, "x-floor")
			b.ReportMetric(loadAverage(), "load1")
			b.ReportMetric(float64(cpu.Microseconds())/float64(iter*benchLines), "cpu-µs/run")
		})
	}
}

// benchInputs writes file number iter: tickets whose ids no earlier file used.
func benchInputs(b *testing.B, dir string, iter int) string {
	path := filepath.Join(dir, fmt.Sprintf("inputs-%d.jsonl", iter))
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	prio := []string{"low", "high"}
	for i := range benchLines {
		fmt.Fprintf(w, `{"id":"t-%d-%06d","priority":%q,"n":%d}`+"\n", iter, i, prio[i%2], i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return path
}

// benchCommitFloor measures single-row committed inserts per second over one connection to the
// ledger at dsn, for about d.
func benchCommitFloor(b *testing.B, dsn string, d time.Duration) float64 {
	ctx := context.Background()
	st, err := ledger.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	conn, err := st.DB().Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE bench_floor (id TEXT PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	insert := `INSERT INTO bench_floor (id, v) VALUES (?, ?)`
	if st.Dialect() == "postgres" {
		insert = `INSERT INTO bench_floor (id, v) VALUES ($1, $2)`
	}
	n, start := 0, time.Now()
	for time.Since(start) < d {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, insert, fmt.Sprint(n), "x"); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// processCPU is the CPU time (user and system) this process has used: pipectl's own cost per
// run, which the load of a shared machine does not change the way it changes wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the one-minute load average (0 where /proc is missing).
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(data), &l)
	return l
}
