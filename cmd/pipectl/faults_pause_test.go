package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// pauseSpec charges (behind a guard that asks the target whether the charge exists) and then
// ships: two side effects, so that a worker that wakes up after a takeover has a next step it
// must not reach.
const pauseSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: pause
inputs: {type: object, properties: {id: {type: string, pattern: "^[A-Za-z0-9][A-Za-z0-9-]{0,40}$"}, url: {const: "http://target.invalid"}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  timeout: 60s
  retry: {max_attempts: 3, initial_interval: 50ms, max_interval: 200ms}
steps:
  - id: charge
    type: http
    method: POST
    url: "${{ inputs.url }}/charge"
    body: {order: "${{ inputs.id }}"}
    guard:
      method: GET
      url: "${{ inputs.url }}/charge-status"
      done_if: "${{ response.body.done }}"
  - {id: ship, type: http, method: POST, url: "${{ inputs.url }}/ship", body: {order: "${{ inputs.id }}"}}
`

// TestFaultPausedWorker stops a worker (SIGSTOP) in the middle of a step, past its lease, lets
// a second worker take the run over and finish it, then wakes the first one (SIGCONT). The
// woken worker must not send anything more to the target, must not write to the run (the
// ledger refuses it: another owner holds it, or it ended), and must say in its log why it let
// the run go. Two places to be paused: waiting for the answer to the side effect itself (the
// effect happened; the result cannot be recorded any more), and waiting for the guard's
// answer just before the side effect (the effect must not be sent at all).
func TestFaultPausedWorker(t *testing.T) {
	faultForm(t)
	for _, at := range []string{"POST /charge", "GET /charge-status"} {
		t.Run(strings.ReplaceAll(at, "/", ""), func(t *testing.T) { pausedWorker(t, at) })
	}
}

func pausedWorker(t *testing.T, pauseAt string) {
	// PostgreSQL only: on SQLite a process stopped inside a write transaction (a worker's
	// claim loop polls in one) holds the database's write lock, and every other process waits
	// for it (docs/runs.md says so); machines that pause are the PostgreSQL case anyway.
	dsn, which := postgresDSN(t), "PostgreSQL"
	target := newCountTarget(t)
	c := newCLI(t, pauseSpec)
	c.useTarget(target.URL)
	held, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	target.hook = func(r *http.Request, key string) (int, string, bool) {
		if r.Method+" "+r.URL.Path == pauseAt && first.CompareAndSwap(false, true) {
			close(held)
			<-release
		}
		if r.URL.Path == "/charge-status" {
			target.mu.Lock()
			done := false
			for _, d := range target.log {
				done = done || (d.method == http.MethodPost && d.path == "/charge" && target.applied[d.key] > 0)
			}
			target.mu.Unlock()
			return http.StatusOK, fmt.Sprintf(`{"done": %t}`, done), true
		}
		return 0, "", false
	}
	submitAll(t, dsn, c.spec, []string{fmt.Sprintf(`{"id": "paused-1", "url": %q}`, target.URL)})
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	a := startFaultWorker(t, c.dir, dsn, "--lease-ttl", "1s")
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatalf("worker A never reached %s:\n%s", pauseAt, a.log.String())
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	waitStopped(t, a.cmd.Process.Pid)
	close(release) // the target answers; A is stopped and cannot read the answer yet
	var runID string
	var expires int64
	for {
		if err := store.DB().QueryRow(`SELECT id, lease_expires_at FROM runs`).Scan(&runID, &expires); err != nil {
			t.Fatal(err)
		}
		if time.Now().UnixMilli() > expires+100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := startFaultWorker(t, c.dir, dsn, "--lease-ttl", "1s")
	counts := waitDone(t, store, 1, time.Minute, nil)
	if counts["succeeded"] != 1 {
		t.Fatalf("the run did not succeed under worker B: %v\n%s", counts, b.log.String())
	}
	if err := b.stop(); err != nil {
		t.Fatalf("worker B: %v", err)
	}
	target.mu.Lock()
	seen := len(target.log)
	target.mu.Unlock()

	// Wake A: from now on every request the target sees comes from A, since B has exited.
	a.cmd.Process.Signal(syscall.SIGCONT)
	var why string
	for end := time.Now().Add(30 * time.Second); why == "" && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(a.log.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "run left the worker" && rec["run_id"] == runID {
				why = fmt.Sprint(rec["reason"])
			}
		}
	}
	if err := a.stop(); err != nil {
		t.Errorf("worker A: %v", err)
	}
	if why == "" {
		t.Fatalf("worker A did not log why it let run %s go:\n%s", runID, a.log.String())
	}
	if !strings.Contains(why, "lease lost") {
		t.Errorf("worker A let the run go, but not because its lease was lost: %s", why)
	}
	target.mu.Lock()
	after := append([]delivery(nil), target.log[seen:]...)
	target.mu.Unlock()
	for _, d := range after {
		t.Errorf("worker A sent %s %s (key %s) after the takeover", d.method, d.path, d.key)
	}
	// The ledger holds nothing of A's after the takeover: every event since is B's.
	events, err := store.Events(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	tookOver := false
	for _, e := range events {
		if strings.HasPrefix(e.Actor, a.prefix) && tookOver {
			t.Errorf("worker A wrote an event after the takeover: %s -> %s %s", e.From, e.To, e.Reason)
		}
		tookOver = tookOver || strings.Contains(e.Reason, "taken over from "+a.prefix)
	}
	if !tookOver {
		t.Errorf("no takeover from A in the events: %+v", events)
	}
	attempts, err := store.Attempts(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, at := range attempts {
		outcomes = append(outcomes, fmt.Sprintf("%s#%d %s", at.StepID, at.Attempt, at.Outcome))
	}
	if os.Getenv("DBG") != "" {
		for _, d := range target.log {
			t.Logf("DBG %s %s %s %s stop=%s", d.at.Format("15:04:05.000"), d.method, d.path, d.key, stopAt.Format("15:04:05.000"))
		}
	}
	dlv := target.check(t, 2)
	t.Logf("%s ledger, A paused at %s past its 1s lease: B took over and finished (%s); A woke and let the run go: %q; %s",
		which, pauseAt, strings.Join(outcomes, ", "), why, dlv)
}

// waitStopped returns once every thread of a process is stopped: kill(2) returns before the
// threads running on other CPUs have noticed SIGSTOP.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, task := range tasks {
			b, err := os.ReadFile(task)
			i := bytes.LastIndexByte(b, ')')
			if err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				stopped = false
				break
			}
		}
		if stopped {
			return
		}
	}
	t.Fatalf("process %d did not stop", pid)
}
