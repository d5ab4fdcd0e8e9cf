package main

// The fault-injection suite (issue 17): real pipectl processes against real databases while
// the database restarts, connections drop, a worker is paused past its lease, the disk under a
// SQLite ledger fills up, and processes are SIGKILLed hundreds of times. It is slow, so it runs
// only when asked:
//
//	PIPECTL_FAULTS=short go test ./cmd/pipectl -run TestFault -v   # what .ci/run runs
//	PIPECTL_FAULTS=long  go test ./cmd/pipectl -run TestFault -v -timeout 60m
//
// with PIPECTL_TEST_POSTGRES set as for the other PostgreSQL tests. The figures each case
// measures are logged (t.Logf) and copied into docs/scaling.md and docs/runs.md.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

// faultSizes are the sizes of one form of the suite.
type faultSizes struct {
	form string
	// restartRuns runs are drained by three workers while PostgreSQL restarts restarts times.
	restartRuns, restarts int
	// proxyRuns runs are drained through a proxy that cuts connections proxyCuts times.
	proxyRuns, proxyCuts int
	// soakKills is the number of SIGKILLs per ledger in the kill soak.
	soakKills int
}

func faultForm(t *testing.T) faultSizes {
	t.Helper()
	switch os.Getenv("PIPECTL_FAULTS") {
	case "":
		t.Skip("fault-injection suite: set PIPECTL_FAULTS=short (CI) or PIPECTL_FAULTS=long to run it")
	case "long":
		return faultSizes{form: "long", restartRuns: 1000, restarts: 10, proxyRuns: 2000, proxyCuts: 100, soakKills: 120}
	case "short", "1":
		return faultSizes{form: "short", restartRuns: 500, restarts: 3, proxyRuns: 200, proxyCuts: 20, soakKills: 20}
	}
	t.Fatalf("PIPECTL_FAULTS=%q: use short or long", os.Getenv("PIPECTL_FAULTS"))
	return faultSizes{}
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// faultWorker is a `pipectl worker` process whose log the test can read while it runs.
type faultWorker struct {
	cmd    *exec.Cmd
	prefix string // host:pid: — the start of its owner id
	log    *lockedBuffer
	done   chan struct{}
	err    error
}

func startFaultWorker(t *testing.T, dir, ledgerDSN string, extra ...string) *faultWorker {
	t.Helper()
	args := append([]string{"--ledger", ledgerDSN, "--log-format", "json", "worker", "--concurrency", "4", "--lease-ttl", "3s", "--poll", "200ms", "--drain", "5s"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	w := &faultWorker{cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.log, w.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.prefix = engine.Owner{Host: engine.CurrentOwner().Host, PID: cmd.Process.Pid}.String()
	go func() { w.err = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { w.kill() })
	return w
}

func (w *faultWorker) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *faultWorker) kill() {
	if w.alive() {
		w.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot die of SIGTERM
		w.cmd.Process.Kill()
	}
	<-w.done
}

// stop drains the worker with SIGTERM and reports how it ended.
func (w *faultWorker) stop() error {
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		w.kill()
		return fmt.Errorf("worker %s did not drain in 30s", w.prefix)
	}
	return w.err
}

// countTarget is a loopback HTTP API that applies each Idempotency-Key once and records every
// delivery: how often each key came, and when.
type countTarget struct {
	*httptest.Server
	mu         sync.Mutex
	applied    map[string]int
	deliveries map[string]int
	log        []delivery
	delay      time.Duration
	// pad makes every answer this many bytes longer (outputs that fill a disk).
	pad int
	// hook, when set, sees each request first; it may hold it (the test pauses the sender
	// meanwhile) and may answer it itself (handled).
	hook func(r *http.Request, key string) (status int, body string, handled bool)
	// answered, when set, hears of each POST once its answer was sent: the sender is then
	// about to commit the result.
	answered func(key string)
}

type delivery struct {
	method, path, key string
	at                time.Time
}

func newCountTarget(t *testing.T) *countTarget {
	ct := &countTarget{applied: map[string]int{}, deliveries: map[string]int{}}
	ct.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		io.Copy(io.Discard, r.Body)
		ct.mu.Lock()
		hook, delay, pad, answered := ct.hook, ct.delay, ct.pad, ct.answered
		ct.log = append(ct.log, delivery{r.Method, r.URL.Path, key, time.Now()})
		ct.mu.Unlock()
		if hook != nil {
			if status, body, handled := hook(r, key); handled {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				io.WriteString(w, body)
				return
			}
		}
		if r.Method == http.MethodPost {
			ct.mu.Lock()
			ct.deliveries[key]++
			if ct.applied[key] == 0 {
				ct.applied[key] = 1
			} else {
				w.Header().Set("Idempotent-Replayed", "true")
			}
			ct.mu.Unlock()
		}
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"ok": true, "pad": %q}`, strings.Repeat("x", pad))
		if answered != nil && r.Method == http.MethodPost {
			w.(http.Flusher).Flush()
			answered(key)
		}
	}))
	t.Cleanup(ct.Close)
	return ct
}

// check asserts that every one of want step keys was applied exactly once, and describes the
// deliveries per key (a resent request carries the same key and is deduplicated here).
func (ct *countTarget) check(t *testing.T, want int) string {
	t.Helper()
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.applied) != want {
		t.Errorf("%d step keys applied at the target, want %d", len(ct.applied), want)
	}
	perKey := map[int]int{}
	total := 0
	for key, n := range ct.applied {
		if n != 1 {
			t.Errorf("step key %s applied %d times", key, n)
		}
		perKey[ct.deliveries[key]]++
		total += ct.deliveries[key]
	}
	var parts []string
	counts := make([]int, 0, len(perKey))
	for n := range perKey {
		counts = append(counts, n)
	}
	sort.Ints(counts)
	for _, n := range counts {
		parts = append(parts, fmt.Sprintf("%d keys x%d", perKey[n], n))
	}
	return fmt.Sprintf("%d deliveries for %d applied keys (%s)", total, len(ct.applied), strings.Join(parts, ", "))
}

// submitMany queues one run per input with one `pipectl submit --inputs -`, in-process.
func submitMany(dsn, spec string, inputs []string) error {
	var out bytes.Buffer
	stdin := strings.NewReader(strings.Join(inputs, "\n") + "\n")
	if code := run(context.Background(), []string{"--ledger", dsn, "submit", spec, "--inputs", "-", "--no-preflight"}, stdin, &out, &out); code != 0 {
		return fmt.Errorf("submit --inputs: exit %d: %s", code, out.String())
	}
	return nil
}

// ledgerCounts reads the runs per state straight from the ledger; errors (the database is
// restarting) give nil.
func ledgerCounts(store *ledger.Store) map[string]int {
	var rows []struct {
		State string `db:"state"`
		N     int    `db:"n"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.DB().SelectContext(ctx, &rows, `SELECT state, COUNT(*) AS n FROM runs GROUP BY state`); err != nil {
		return nil
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out
}

// waitDone polls the ledger until want runs have ended (succeeded or dead-lettered), calling
// tick between polls, or until the deadline; it returns the last counts.
func waitDone(t *testing.T, store *ledger.Store, want int, deadline time.Duration, tick func(counts map[string]int)) map[string]int {
	t.Helper()
	end := time.Now().Add(deadline)
	var last map[string]int
	for {
		if c := ledgerCounts(store); c != nil {
			last = c
			if c["succeeded"]+c["failed_permanent"] >= want {
				return c
			}
		}
		if time.Now().After(end) {
			return last
		}
		if tick != nil {
			tick(last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deadLetters lists why runs were dead-lettered, so that a failure names its reason.
func deadLetters(store *ledger.Store) string {
	var rows []struct {
		ID    string `db:"id"`
		Error string `db:"error"`
	}
	store.DB().Select(&rows, `SELECT id, error FROM runs WHERE state = 'failed_permanent' ORDER BY id LIMIT 5`)
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "\n  %s: %s", r.ID, r.Error)
	}
	return b.String()
}

// claimsSince counts the runs a worker claimed or took over after a moment, by the events it
// wrote as their actor.
func claimsSince(t *testing.T, store *ledger.Store, w *faultWorker, since time.Time) int {
	t.Helper()
	var n int
	q := store.DB().Rebind(`SELECT COUNT(*) FROM run_events WHERE to_state = 'processing' AND actor LIKE ? AND at > ?`)
	if err := store.DB().Get(&n, q, w.prefix+"%", since.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	return n
}

// takeovers counts the processing -> processing events: leases that ran out (a worker cut off
// from the database, or killed) and were taken over.
func takeovers(t *testing.T, store *ledger.Store) int {
	t.Helper()
	var n int
	if err := store.DB().Get(&n, `SELECT COUNT(*) FROM run_events WHERE from_state = 'processing' AND to_state = 'processing'`); err != nil {
		t.Fatal(err)
	}
	return n
}
