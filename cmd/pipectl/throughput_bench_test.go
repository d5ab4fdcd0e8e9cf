package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

// throughputSpec is a pipeline of n pure transform steps: CPU-bound work for the worker, so
// that what is measured is the cost of the ledger and the engine per run.
func throughputSpec(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: pipectl/v1\nkind: Pipeline\nname: %s\n", name)
	b.WriteString("inputs: {type: object, properties: {id: {type: string}}}\n")
	b.WriteString("idempotency: {key: \"${{ inputs.id }}\"}\nsteps:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {id: s%d, type: transform, output: {id: \"${{ inputs.id }}\", n: %d}}\n", i, i)
	}
	return b.String()
}

// BenchmarkWorkerThroughput drains runs queued beforehand with real `pipectl worker` child
// processes (--concurrency 32 each) on PostgreSQL, and prints in the same run the floor of the
// same server: single-row commits per second over one connection and over 32.
//
//	PIPECTL_TEST_POSTGRES=... go test ./cmd/pipectl -run '^$' -bench WorkerThroughput -benchtime 1x
//
// The rate of a scenario is its runs divided by the time from the first claim to the last
// finish, both read from the ledger: process start-up is not counted. Scenarios: one-step
// runs on one worker and on two, three-step runs on one worker, and one-step runs on one
// worker beside an idle one (`--pipelines nothing`). The last is the control of "two against
// one": a second worker that costs nothing, which is the most a second worker can give where
// one already keeps the machine busy, measured with the same noise. The runs are queued one
// to a commit, or with PIPECTL_BENCH_QUEUE=inputs as a backfill is, by one `pipectl submit
// --inputs` (a thousand to a commit). PIPECTL_BENCH_RUNS sets the number of runs per
// scenario (default 4000), PIPECTL_BENCH_ROUNDS the rounds (default 3; each figure is the
// median of its rounds); PIPECTL_BENCH_BIN runs a binary built beforehand (an older commit,
// side by side with this one); PIPECTL_BENCH_PROFILE=DIR has each worker write a CPU profile
// there (worker-<steps>step-<workers>w<idle>idle-<i>.prof, for go tool pprof).
func BenchmarkWorkerThroughput(b *testing.B) {
	base := os.Getenv("PIPECTL_TEST_POSTGRES")
	if base == "" {
		b.Skip("PIPECTL_TEST_POSTGRES is not set")
	}
	runs := 4000
	if v := os.Getenv("PIPECTL_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	rounds := 3
	if v := os.Getenv("PIPECTL_BENCH_ROUNDS"); v != "" {
		fmt.Sscan(v, &rounds)
	}
	bin := benchBinary(b)
	for b.Loop() {
		floor1 := commitFloor(b, ledger.PostgresTestSchema(b, base), 1)
		floorN := commitFloor(b, ledger.PostgresTestSchema(b, base), 32)
		// The scenarios take turns, round after round, and each figure is the median of its
		// rounds: the same server measured a scenario 20% apart from one minute to the next,
		// and two workers are compared with one in the same round.
		var one, three, two, ratio, control []float64
		for range max(rounds, 1) {
			// One worker alone sits between the two scenarios it is compared with.
			t := drainRate(b, bin, ledger.PostgresTestSchema(b, base), 1, 2, 0, runs)
			o := drainRate(b, bin, ledger.PostgresTestSchema(b, base), 1, 1, 0, runs)
			// A second worker that takes no run: what two workers would measure against one
			// if the second cost nothing, with the same processes started and stopped.
			c := drainRate(b, bin, ledger.PostgresTestSchema(b, base), 1, 1, 1, runs)
			one, two, ratio, control = append(one, o), append(two, t), append(ratio, t/o), append(control, c/o)
			three = append(three, drainRate(b, bin, ledger.PostgresTestSchema(b, base), 3, 1, 0, runs))
		}
		b.ReportMetric(floor1, "floor-commits/s-1conn")
		b.ReportMetric(floorN, "floor-commits/s-32conn")
		b.ReportMetric(median(one), "runs/s-1step-1worker")
		b.ReportMetric(median(three), "runs/s-3step-1worker")
		b.ReportMetric(median(two), "runs/s-1step-2workers")
		b.ReportMetric(median(ratio), "x-2workers/1")
		b.ReportMetric(median(control), "x-1worker+idle/1")
		load, _ := os.ReadFile("/proc/loadavg")
		b.Logf("%d runs per scenario, %d rounds; floor %.0f commits/s (1 conn), %.0f (32 conns); 1-step %.0f runs/s %v (%.2fx the 1-conn floor), 3-step %.0f runs/s %v, 2 workers %.0f runs/s %v (%.2fx one, per round %v), 1 worker beside an idle one %.2fx one (per round %v); load average %s",
			runs, len(one), floor1, floorN, median(one), rounded(one), median(one)/floor1, median(three), rounded(three), median(two), rounded(two), median(ratio), rounded(ratio), median(control), rounded(control), strings.TrimSpace(string(load)))
	}
}

// median is the middle of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// rounded prints each of xs with two significant decimals at most, for the log.
func rounded(xs []float64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		if x < 10 {
			out[i] = strconv.FormatFloat(x, 'f', 2, 64)
		} else {
			out[i] = strconv.FormatFloat(x, 'f', 0, 64)
		}
	}
	return out
}

// benchBinary is PIPECTL_BENCH_BIN when set, else pipectl built from this tree.
func benchBinary(b *testing.B) string {
	if bin := os.Getenv("PIPECTL_BENCH_BIN"); bin != "" {
		return bin
	}
	return buildBinary(b)
}

// commitFloor measures single-row INSERT commits per second over conns connections for a
// second: the most a one-commit-per-run design could reach on this server.
func commitFloor(b *testing.B, dsn string, conns int) float64 {
	db, err := sqlx.Open("pgx", dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	if _, err := db.Exec(`CREATE TABLE floor (id bigserial PRIMARY KEY, v bigint NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	checkpoint(b, db)
	var n atomic.Int64
	end := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for time.Now().Before(end) {
				if _, err := db.Exec(`INSERT INTO floor (v) VALUES ($1)`, 1); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// checkpoint starts a scenario from the same point of the server's checkpoint cycle. The
// floors and the drains write a gigabyte of WAL every minute or two, which starts a checkpoint
// in the middle of whichever scenario comes next; after one, the first change of every page
// writes the whole page to the WAL again. Scenarios measured 20-30% apart from one invocation to
// the next that way (a one-step drain on one worker slower than on two). A checkpoint before
// the queue is filled keeps the drain that follows clear of one.
func checkpoint(b *testing.B, db *sqlx.DB) {
	if _, err := db.Exec(`CHECKPOINT`); err != nil {
		b.Logf("CHECKPOINT refused (%v): scenarios may be measured across the server's checkpoints", err)
	}
}

// drainRate queues runs of a steps-step transform pipeline on the ledger at dsn, starts workers
// `pipectl worker` processes and idle more started with `--pipelines nothing`, which can claim
// none of them, and returns the runs per second from the first claim to the last finish.
func drainRate(b *testing.B, bin, dsn string, steps, workers, idle, runs int) float64 {
	dir := b.TempDir()
	name := fmt.Sprintf("tp%d", steps)
	specPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(specPath, []byte(throughputSpec(name, steps)), 0o644); err != nil {
		b.Fatal(err)
	}
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if store.Dialect() == "postgres" {
		// A SQLite ledger here is a new file, with nothing of another scenario to write back.
		checkpoint(b, store.DB())
	}
	if os.Getenv("PIPECTL_BENCH_QUEUE") == "inputs" {
		queueInputs(b, bin, dsn, dir, specPath, runs)
	} else {
		queue(b, dsn, specPath, runs)
	}
	busy0 := machineBusy()
	var procs []*exec.Cmd
	for i := range workers + idle {
		conc := "32"
		if v := os.Getenv("PIPECTL_BENCH_CONCURRENCY"); v != "" {
			conc = v
		}
		cmd := exec.Command(bin, "--ledger", dsn, "worker", "--concurrency", conc)
		if i >= workers {
			cmd.Args = append(cmd.Args, "--pipelines", "nothing")
		}
		cmd.Dir = dir
		if prof := os.Getenv("PIPECTL_BENCH_PROFILE"); prof != "" {
			cmd.Env = append(os.Environ(), "PIPECTL_CPUPROFILE="+filepath.Join(prof, fmt.Sprintf("worker-%dstep-%dw%didle-%d.prof", steps, workers, idle, i)))
		}
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	var cpu, idleCPU time.Duration
	stop := func() {
		for i, p := range procs {
			p.Process.Signal(os.Interrupt)
			p.Wait()
			used := p.ProcessState.UserTime() + p.ProcessState.SystemTime()
			if i < workers {
				cpu += used
			} else {
				idleCPU += used
			}
		}
		procs = nil
	}
	defer stop()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var done int
		if err := store.DB().Get(&done, `SELECT COUNT(*) FROM runs WHERE state = 'succeeded'`); err != nil {
			b.Fatal(err)
		}
		if done == runs {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d runs succeeded after 5 minutes", done, runs)
		}
		// The rate comes from the ledger's timestamps, not from this loop: polling more often
		// would only take CPU from the drain it measures (a count of 4,000 runs is about a
		// millisecond of the server's).
		time.Sleep(100 * time.Millisecond)
	}
	var span struct {
		First int64 `db:"first"`
		Last  int64 `db:"last"`
	}
	if err := store.DB().Get(&span, `SELECT (SELECT MIN(at) FROM run_events WHERE to_state = 'processing') AS first, (SELECT MAX(finished_at) FROM runs) AS last`); err != nil {
		b.Fatal(err)
	}
	busy := machineBusy() - busy0
	if workers > 1 {
		logShares(b, store, span.First, span.Last)
	}
	var claimants int
	if err := store.DB().Get(&claimants, `SELECT COUNT(DISTINCT actor) FROM run_events WHERE to_state = 'processing'`); err != nil {
		b.Fatal(err)
	}
	if claimants > workers {
		b.Fatalf("%d processes claimed runs, %d were meant to (the others were started to claim none)", claimants, workers)
	}
	stop()
	b.Logf("%d-step runs, %d worker(s) and %d idle: %.0f µs of the workers' CPU per run, and %.0f ms in all for the idle ones (user+system, start-up included); the whole machine was busy %.0f µs per run (the database, the workers and this test's polling)",
		steps, workers, idle, float64(cpu.Microseconds())/float64(runs), float64(idleCPU.Microseconds())/1000, float64(busy.Microseconds())/float64(runs))
	return float64(runs) / (float64(max(span.Last-span.First, 1)) / 1000)
}

// logShares logs each worker's share of a drain: its runs, and its first and last claim in ms
// from the first claim of all (last finish at end): a worker that claimed late, or stopped
// claiming early, left the others to drain alone for that long.
func logShares(b *testing.B, store *ledger.Store, first, end int64) {
	var shares []struct {
		Actor string `db:"actor"`
		Runs  int64  `db:"runs"`
		First int64  `db:"first"`
		Last  int64  `db:"last"`
	}
	if err := store.DB().Select(&shares, `SELECT actor, COUNT(*) AS runs, MIN(at) AS first, MAX(at) AS last FROM run_events WHERE to_state = 'processing' GROUP BY actor ORDER BY 4`); err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, s := range shares {
		parts = append(parts, fmt.Sprintf("%d runs, claims from %d to %d ms", s.Runs, s.First-first, s.Last-first))
	}
	b.Logf("drain of %d ms: %s", end-first, strings.Join(parts, "; "))
}

// machineBusy is the CPU time all cores have spent outside idle and iowait since boot, from
// /proc/stat (zero where there is none): the database's share of a drain is what the machine
// spent minus what the workers did.
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	var busy int64
	for i, f := range fields[1:] {
		var v int64
		fmt.Sscan(f, &v)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// queueInputs queues runs of the pipeline at specPath as a backfill is queued: one `pipectl
// submit --inputs` of the binary under test, a thousand runs to a commit (so a thousand share
// a created_at).
func queueInputs(b testing.TB, bin, dsn, dir, specPath string, runs int) {
	var lines strings.Builder
	for i := 1; i <= runs; i++ {
		fmt.Fprintf(&lines, "{\"id\": \"r%06d\"}\n", i)
	}
	path := filepath.Join(dir, "inputs.jsonl")
	if err := os.WriteFile(path, []byte(lines.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--ledger", dsn, "submit", specPath, "--inputs", path, "--no-preflight", "--batch-size", "1000")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("submit --inputs: %v\n%s", err, out)
	}
}

// queue submits runs of the pipeline at specPath in-process, eight at a time.
func queue(b testing.TB, dsn, specPath string, runs int) {
	v, err := dsl.NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	text, err := os.ReadFile(specPath)
	if err != nil {
		b.Fatal(err)
	}
	p, diags := v.Parse(specPath, text)
	if p == nil {
		b.Fatal(diags)
	}
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	eng := &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Owner: engine.CurrentOwner(), Actor: "bench", Version: "bench"}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(runs); i = next.Add(1) {
				if _, err := eng.Submit(context.Background(), p, map[string]any{"id": fmt.Sprintf("r%06d", i)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkWorkerThroughputSQLite is BenchmarkWorkerThroughput on SQLite files: one `pipectl
// worker --concurrency 32` drains one-step and three-step runs at the default synchronous=FULL,
// and ten-step runs at synchronous=NORMAL (the steps/s of issue 16's NORMAL target, on the path
// a queue takes), each beside the floor of the same file system: single-row commits per second
// on a SQLite ledger of its own (one connection, WAL), at FULL and at NORMAL.
//
//	go test ./cmd/pipectl -run '^$' -bench WorkerThroughputSQLite -benchtime 1x
//
// PIPECTL_BENCH_RUNS sets the runs per scenario (default 2000; the ten-step scenario drains
// four times as many, so that it lasts about as long as the others); PIPECTL_BENCH_BIN runs a
// binary built beforehand.
func BenchmarkWorkerThroughputSQLite(b *testing.B) {
	runs := 2000
	if v := os.Getenv("PIPECTL_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	bin := benchBinary(b)
	for b.Loop() {
		floor := sqliteFloor(b, "sqlite:"+filepath.Join(b.TempDir(), "floor.db"))
		floorNormal := sqliteFloor(b, "sqlite:"+filepath.Join(b.TempDir(), "floor-normal.db")+"?synchronous=normal")
		one := drainRate(b, bin, "sqlite:"+filepath.Join(b.TempDir(), "one.db"), 1, 1, 0, runs)
		three := drainRate(b, bin, "sqlite:"+filepath.Join(b.TempDir(), "three.db"), 3, 1, 0, runs)
		ten := drainRate(b, bin, "sqlite:"+filepath.Join(b.TempDir(), "ten.db")+"?synchronous=normal", 10, 1, 0, 4*runs)
		b.ReportMetric(floor, "floor-commits/s")
		b.ReportMetric(floorNormal, "floor-normal-commits/s")
		b.ReportMetric(one, "runs/s-1step")
		b.ReportMetric(three, "runs/s-3step")
		b.ReportMetric(10*ten, "steps/s-10step-normal")
		load, _ := os.ReadFile("/proc/loadavg")
		b.Logf("%d runs per scenario; FULL: floor %.0f commits/s, 1-step %.0f runs/s (%.2fx the floor), 3-step %.0f runs/s (%.0f steps/s); NORMAL: floor %.0f commits/s, 10-step %.0f runs/s (%.0f steps/s, %.1f µs per step); load average %s",
			runs, floor, one, one/floor, three, 3*three, floorNormal, ten, 10*ten, 1e6/(10*ten), strings.TrimSpace(string(load)))
	}
}

// sqliteFloor measures single-row INSERT commits per second for a second on a SQLite ledger
// opened as pipectl opens it.
func sqliteFloor(b *testing.B, dsn string) float64 {
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	db := store.DB()
	if _, err := db.Exec(`CREATE TABLE floor (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	n := 0
	start := time.Now()
	for time.Since(start) < time.Second {
		tx, err := db.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tx.Exec(`INSERT INTO floor (v) VALUES (?)`, 1); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}
