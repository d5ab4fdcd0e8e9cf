package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

const workerSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: fulfil
inputs: {type: object, properties: {id: {type: string, pattern: "^[A-Za-z0-9][A-Za-z0-9-]{0,40}$"}, url: {const: "http://target.invalid"}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  retry: {max_attempts: 5, initial_interval: 50ms, max_interval: 200ms}
steps:
  - {id: reserve, type: http, method: POST, url: "${{ inputs.url }}/reserve", body: {order: "${{ inputs.id }}"}}
  - {id: ship, type: http, method: POST, url: "${{ inputs.url }}/ship", body: {order: "${{ inputs.id }}"}}
  - {id: done, type: transform, output: "${{ steps.ship.output.status }}"}
`

func postgresDSN(t *testing.T) string {
	dsn := os.Getenv("PIPECTL_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("PIPECTL_TEST_POSTGRES is not set: skipping the PostgreSQL worker tests")
	}
	return ledger.PostgresTestSchema(t, dsn)
}

// submitAll queues runs in-process through the real submit command.
func submitAll(t *testing.T, ledgerDSN, spec string, inputs []string) {
	t.Helper()
	for _, in := range inputs {
		var out, errOut bytes.Buffer
		// The workers hold the keys, the submitter does not: as on a machine that only queues.
		if code := run(context.Background(), []string{"--ledger", ledgerDSN, "submit", spec, "--input", in, "--no-preflight"}, strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("submit exit %d: %s%s", code, out.String(), errOut.String())
		}
	}
}

type workerProc struct {
	cmd   *exec.Cmd
	owner string
	log   *bytes.Buffer
}

func startWorker(t *testing.T, dir, ledgerDSN string, extra ...string) *workerProc {
	t.Helper()
	args := append([]string{"--ledger", ledgerDSN, "worker", "--concurrency", "4", "--lease-ttl", "2s", "--poll", "200ms", "--drain", "5s"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &workerProc{cmd: cmd, owner: engine.Owner{Host: engine.CurrentOwner().Host, PID: cmd.Process.Pid}.String(), log: &log}
}

func waitForStates(t *testing.T, store *ledger.Store, want int, deadline time.Duration, tick func()) map[domain.RunState]int {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		counts := map[domain.RunState]int{}
		runs, err := store.ListRuns(context.Background(), ledger.RunFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			counts[r.State]++
		}
		if counts[domain.StateSucceeded]+counts[domain.StateFailedPermanent] == want || time.Now().After(end) {
			return counts
		}
		if tick != nil {
			tick()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWorkersChaos runs 500 runs of a pipeline with two side effects on three worker
// processes against PostgreSQL, SIGKILLing two of them at random moments and restarting them.
// Every run must succeed, every step key must be applied exactly once at the target, and no
// run may stay claimed by a dead worker longer than its lease.
func TestWorkersChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	dsn := postgresDSN(t)
	target := newApplyTarget(t)
	target.delay = 15 * time.Millisecond
	c := newCLI(t, workerSpec)
	c.useTarget(target.URL)
	const runs = 500
	inputs := make([]string, runs)
	for i := range inputs {
		inputs[i] = fmt.Sprintf(`{"id": "order-%04d", "url": %q}`, i, target.URL)
	}
	submitAll(t, dsn, c.spec, inputs)
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	workers := []*workerProc{startWorker(t, c.dir, dsn), startWorker(t, c.dir, dsn), startWorker(t, c.dir, dsn)}
	kills := map[string]time.Time{}
	rnd := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	next := time.Now().Add(300 * time.Millisecond)
	chaos := func() {
		if time.Now().Before(next) || len(kills) >= 12 {
			return
		}
		i := 1 + rnd.IntN(2) // worker 0 is never killed, so progress is guaranteed
		w := workers[i]
		w.cmd.Process.Signal(syscall.SIGKILL)
		w.cmd.Wait()
		kills[w.owner] = time.Now()
		time.Sleep(time.Duration(50+rnd.IntN(250)) * time.Millisecond)
		workers[i] = startWorker(t, c.dir, dsn)
		next = time.Now().Add(time.Duration(100+rnd.IntN(400)) * time.Millisecond)
	}
	counts := waitForStates(t, store, runs, 3*time.Minute, chaos)
	stopWorkers(workers)
	if counts[domain.StateSucceeded] != runs {
		t.Fatalf("states %v after the chaos (want %d succeeded)", counts, runs)
	}
	if len(kills) < 5 {
		t.Fatalf("only %d workers were killed", len(kills))
	}
	applied, requests := target.snapshot()
	if len(applied) != 2*runs {
		t.Fatalf("%d step keys applied at the target, want %d", len(applied), 2*runs)
	}
	replays := 0
	for key, n := range applied {
		if n != 1 {
			t.Fatalf("step key %s applied %d times", key, n)
		}
		replays += requests[key] - 1
	}
	// Every takeover of a killed worker's run happened within its lease, plus the poll
	// interval and scheduling slack.
	all, _ := store.ListRuns(context.Background(), ledger.RunFilter{})
	takeovers, worst := 0, time.Duration(0)
	for _, r := range all {
		events, err := store.Events(context.Background(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			if e.From != domain.StateProcessing || e.To != domain.StateProcessing {
				continue
			}
			for owner, killedAt := range kills {
				if strings.Contains(e.Reason, "taken over from "+owner) { // owner is host:pid:

					takeovers++
					if d := e.At.Sub(killedAt); d > worst {
						worst = d
					}
				}
			}
		}
	}
	if worst > 2*time.Second+2*time.Second {
		t.Fatalf("a killed worker's run waited %s for a takeover; the lease is 2s", worst)
	}
	t.Logf("%d runs on 3 workers, %d SIGKILLs, %d takeovers (slowest %s after the kill), %d requests replayed with their step key and deduplicated",
		runs, len(kills), takeovers, worst.Round(time.Millisecond), replays)
}

// TestWorkerOnSQLite runs a worker on a SQLite ledger (one host) and reads its metrics endpoint;
// TestRunOnPostgres runs pipectl run against PostgreSQL.
func TestWorkerOnSQLite(t *testing.T) {
	target := newApplyTarget(t)
	c := newCLI(t, workerSpec)
	c.useTarget(target.URL)
	submitAll(t, c.ledger, c.spec, []string{fmt.Sprintf(`{"id": "lite-1", "url": %q}`, target.URL), fmt.Sprintf(`{"id": "lite-2", "url": %q}`, target.URL)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	w := startWorker(t, c.dir, c.ledger, "--metrics-addr", addr)
	store, err := ledger.Open(context.Background(), c.ledger)
	if err != nil {
		t.Fatal(err)
	}
	counts := waitForStates(t, store, 2, 30*time.Second, nil)
	store.Close()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics endpoint: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pipectl_runs_total{pipeline="fulfil",state="succeeded"} 2`, `pipectl_step_attempts_total{class="none",outcome="succeeded",pipeline="fulfil",step="ship"} 2`, "pipectl_claim_duration_seconds_count", "pipectl_queue_depth"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("worker did not drain cleanly: %v\n%s", err, w.log)
	}
	if counts[domain.StateSucceeded] != 2 {
		t.Fatalf("sqlite worker: %v\n%s", counts, w.log)
	}
	// The worker says when each run leaves its hands, and how.
	if n := strings.Count(w.log.String(), `"msg":"run finished"`); n != 2 || !strings.Contains(w.log.String(), `"state":"succeeded","duration_ms":`) {
		t.Fatalf("want a run finished line per run, got %d:\n%s", n, w.log)
	}
}

func TestRunOnPostgres(t *testing.T) {
	dsn := postgresDSN(t)
	target := newApplyTarget(t)
	c := newCLI(t, workerSpec)
	c.useTarget(target.URL)
	pg := &cli{t: t, dir: c.dir, ledger: dsn, spec: c.spec}
	if code, out := pg.exec(t, nil, "run", c.spec, "--input", fmt.Sprintf(`{"id": "pg-1", "url": %q}`, target.URL)); code != 0 {
		t.Fatalf("pipectl run on PostgreSQL: exit %d\n%s", code, out)
	}
	if code, out := pg.exec(t, nil, "run", c.spec, "--input", fmt.Sprintf(`{"id": "pg-1", "url": %q}`, target.URL)); code != 0 || !strings.Contains(out, "duplicate") {
		t.Fatalf("duplicate on PostgreSQL: exit %d\n%s", code, out)
	}
}

const pureWorkerSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: tally
inputs: {type: object, properties: {id: {type: string}, n: {type: integer}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: double, type: transform, output: {n: "${{ inputs.n * 2 }}"}}
  - {id: check, type: gate, input: "${{ steps.double.output }}", schema: {type: object, required: [n], properties: {n: {type: integer, minimum: 0}}}}
  - {id: label, type: transform, output: "${{ inputs.id + ':' + string(steps.check.output.n) }}"}
`

// TestWorkersChaosPureRuns is TestWorkersChaos for runs of pure steps, which a claim runs to
// their end inside its own transaction: three workers drain 3,000 of them on PostgreSQL while
// two are SIGKILLed at random moments, many of them in the middle of such a claim. Every run
// must succeed with exactly one succeeded attempt per step and one end, whichever way it went.
func TestWorkersChaosPureRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	dsn := postgresDSN(t)
	c := newCLI(t, pureWorkerSpec)
	const runs = 3000
	store := submitPureRuns(t, c, dsn, "t", runs)
	var all []*workerProc
	start := func() *workerProc {
		// Without host lanes all three drain at once, so that the kills land in claims
		// (TestWorkersShareAHostLane kills a lane's holder).
		w := startWorker(t, c.dir, dsn, "--host-lanes", "0")
		all = append(all, w)
		return w
	}
	workers := []*workerProc{start(), start(), start()}
	kills := 0
	rnd := rand.New(rand.NewPCG(11, uint64(time.Now().UnixNano())))
	next := time.Now().Add(time.Duration(20+rnd.IntN(80)) * time.Millisecond)
	chaos := func() {
		if time.Now().Before(next) || kills >= 20 {
			return
		}
		i := 1 + rnd.IntN(2) // worker 0 is never killed, so progress is guaranteed
		workers[i].cmd.Process.Signal(syscall.SIGKILL)
		workers[i].cmd.Wait()
		kills++
		workers[i] = start()
		next = time.Now().Add(time.Duration(20+rnd.IntN(150)) * time.Millisecond)
	}
	counts := waitForStates(t, store, runs, 3*time.Minute, chaos)
	stopWorkers(workers)
	if counts[domain.StateSucceeded] != runs {
		t.Fatalf("states %v after the chaos (want %d succeeded)", counts, runs)
	}
	if kills < 5 {
		t.Fatalf("only %d workers were killed", kills)
	}
	inClaim := 0
	for _, w := range all {
		inClaim += strings.Count(w.log.String(), `"in_claim":true`)
	}
	if inClaim < runs/2 {
		t.Fatalf("only %d of %d runs were finished inside their claim", inClaim, runs)
	}
	checkPureRunsEndedOnce(t, store)
	var other int
	store.DB().QueryRow(`SELECT count(*) FROM step_attempts WHERE outcome <> 'succeeded'`).Scan(&other)
	if other != 0 {
		t.Fatalf("%d attempts that did not succeed (a killed claim's runs must leave none)", other)
	}
	t.Logf("%d pure runs on 3 workers, %d SIGKILLs, %d finished inside their claim", runs, kills, inClaim)
}

// A transform over untrusted input whose error quotes that input: with a key holding a NUL
// character, CEL says `no such key: <key>`, and PostgreSQL refuses a NUL in a text column.
const nulKeySpec = `apiVersion: pipectl/v1
kind: Pipeline
name: pick
inputs: {type: object, properties: {id: {type: string}, k: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: pick, type: transform, output: "${{ {'a': 1}[inputs.k] }}"}
`

// TestWorkerDeadLettersARunWhoseErrorTheDatabaseCannotStore: a run whose error text holds a
// NUL (from its input) is dead-lettered like any other, and the runs claimed with it succeed,
// whether the claim finishes them (the default) or slots run them (--max-per-pipeline). Before,
// the claim that finished it was rolled back whole, again and again, with the runs it held
// (found by a review); in a slot, its end could not be written and it stayed processing.
func TestWorkerDeadLettersARunWhoseErrorTheDatabaseCannotStore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"finished in the claim", nil}, {"run in a slot", []string{"--max-per-pipeline", "100"}}} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := postgresDSN(t)
			c := newCLI(t, nulKeySpec)
			var jsonl strings.Builder
			jsonl.WriteString(`{"id": "nul", "k": "\u0000"}` + "\n")
			const good = 30
			for i := range good {
				fmt.Fprintf(&jsonl, "{\"id\": \"g-%03d\", \"k\": \"a\"}\n", i)
			}
			store := submitJSONL(t, c, dsn, jsonl.String())
			w := startWorker(t, c.dir, dsn, tc.extra...)
			counts := waitForStates(t, store, good+1, 20*time.Second, nil)
			w.cmd.Process.Signal(syscall.SIGTERM)
			w.cmd.Wait()
			if counts[domain.StateSucceeded] != good || counts[domain.StateFailedPermanent] != 1 {
				t.Fatalf("states %v; worker log:\n%s", counts, w.log.String())
			}
			bad, err := store.FindRun(context.Background(), "pick", "nul")
			if err != nil {
				t.Fatal(err)
			}
			if bad.State != domain.StateFailedPermanent || !strings.Contains(bad.Error, "no such key: \uFFFD") {
				t.Fatalf("the run with a NUL key: %s, error %q", bad.State, bad.Error)
			}
		})
	}
}

// submitJSONL queues one run per line of jsonl with `pipectl submit --inputs` and returns the
// ledger, open until the test ends.
func submitJSONL(t *testing.T, c *cli, dsn, jsonl string) *ledger.Store {
	t.Helper()
	inputs := c.dir + "/inputs.jsonl"
	if err := os.WriteFile(inputs, []byte(jsonl), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--ledger", dsn, "submit", c.spec, "--inputs", inputs}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("submit exit %d: %s%s", code, out.String(), errOut.String())
	}
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// stopWorkers asks every worker to stop (SIGTERM) and waits for them all.
func stopWorkers(workers []*workerProc) {
	for _, w := range workers {
		w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range workers {
		w.cmd.Wait()
	}
}

// TestWorkersShareAHostLane: two workers of this host drain 12,000 runs of pure steps on
// PostgreSQL with one host lane between them (--host-lanes 1). While one drains, the other
// claims nothing and says that it waits; once the holder is SIGKILLed, the kernel frees its
// lane and the other drains the rest. Every run still ends once, with one attempt per step.
func TestWorkersShareAHostLane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	dsn := postgresDSN(t)
	c := newCLI(t, pureWorkerSpec)
	const runs = 12000
	store := submitPureRuns(t, c, dsn, "l", runs)
	db := store.DB()
	var workers []*workerProc
	claimsBy := func() map[string]int {
		rows, err := db.Query(`SELECT actor, count(*) FROM run_events WHERE to_state = 'processing' GROUP BY actor`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int{}
		for rows.Next() {
			var actor string
			var n int
			if err := rows.Scan(&actor, &n); err != nil {
				t.Fatal(err)
			}
			// An actor is the owner id, host:pid, followed by the process's start.
			for _, w := range workers {
				if strings.HasPrefix(actor, strings.TrimSuffix(w.owner, ":")+":") {
					out[w.owner] += n
				}
			}
		}
		return out
	}
	succeeded := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM runs WHERE state = 'succeeded'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	args := []string{"--concurrency", "8", "--host-lanes", "1"}
	workers = []*workerProc{startWorker(t, c.dir, dsn, args...), startWorker(t, c.dir, dsn, args...)}
	defer stopWorkers(workers)
	for end := time.Now().Add(time.Minute); succeeded() < runs/10; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the workers did not start draining")
		}
	}
	holder, waiter := workers[0], workers[1]
	if before := claimsBy(); before[waiter.owner] > before[holder.owner] {
		holder, waiter = waiter, holder
	}
	// Both claim as they start, before either drains back to back; after that only the holder.
	waited := claimsBy()[waiter.owner]
	time.Sleep(300 * time.Millisecond)
	now := claimsBy()
	if done := succeeded(); done == runs {
		t.Fatalf("the holder drained all %d runs before the test could look; queue more", runs)
	}
	if now[waiter.owner] != waited {
		t.Fatalf("the waiting worker claimed %d runs while the other held the lane (%v)", now[waiter.owner]-waited, now)
	}
	holder.cmd.Process.Signal(syscall.SIGKILL)
	holder.cmd.Wait()
	counts := waitForStates(t, store, runs, 2*time.Minute, nil)
	if counts[domain.StateSucceeded] != runs {
		t.Fatalf("states %v after the holder was killed (want %d succeeded)", counts, runs)
	}
	if after := claimsBy(); after[waiter.owner] <= waited {
		var timeline []string
		rows, _ := db.Query(`SELECT actor, at / 50, count(*) FROM run_events WHERE to_state = 'processing' GROUP BY 1, 2 ORDER BY 2, 1`)
		for rows.Next() {
			var a string
			var at, n int64
			rows.Scan(&a, &at, &n)
			timeline = append(timeline, fmt.Sprintf("%s@%d:%d", a, at%10000, n))
		}
		rows.Close()
		t.Fatalf("the waiting worker never drained after the holder died (%v, %d before); %v", after, waited, timeline)
	}
	stopWorkers([]*workerProc{waiter})
	if !strings.Contains(waiter.log.String(), "waiting for its lane") {
		t.Fatalf("the waiting worker does not say why it waits:\n%s", waiter.log.String())
	}
	checkPureRunsEndedOnce(t, store)
}

// submitPureRuns queues n runs of pureWorkerSpec, their ids prefix-00000 on, and returns the
// ledger.
func submitPureRuns(t *testing.T, c *cli, dsn, prefix string, n int) *ledger.Store {
	t.Helper()
	var jsonl strings.Builder
	for i := range n {
		fmt.Fprintf(&jsonl, "{\"id\": \"%s-%05d\", \"n\": %d}\n", prefix, i, i)
	}
	return submitJSONL(t, c, dsn, jsonl.String())
}

// checkPureRunsEndedOnce fails unless every run of pureWorkerSpec in the ledger has exactly one
// succeeded attempt per step (three) and one end.
func checkPureRunsEndedOnce(t *testing.T, store *ledger.Store) {
	t.Helper()
	db := store.DB()
	var wrong int
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT r.id FROM runs r
		LEFT JOIN step_attempts a ON a.run_id = r.id AND a.outcome = 'succeeded'
		GROUP BY r.id HAVING count(a.id) <> 3 OR count(DISTINCT a.step_id) <> 3) x`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong > 0 {
		t.Fatalf("%d runs do not have exactly one succeeded attempt per step", wrong)
	}
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT r.id FROM runs r LEFT JOIN run_events e ON e.run_id = r.id AND e.to_state = 'succeeded'
		GROUP BY r.id HAVING count(e.id) <> 1) x`).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong > 0 {
		t.Fatalf("%d runs do not have exactly one end", wrong)
	}
}
