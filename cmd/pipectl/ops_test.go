package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// cliRun runs pipectl with the model server configured and returns exit code and output.
func (c *cli) exec(t *testing.T, model *llmtest.Server, args ...string) (int, string) {
	t.Helper()
	cmd := c.command(args...)
	if model != nil {
		cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
	}
	out, err := cmd.CombinedOutput()
	return exitCodeOf(err), string(out)
}

func (c *cli) state(t *testing.T, id string) shownRun {
	t.Helper()
	raw, err := c.command("runs", "show", id, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var doc shownRun
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

type fullShow struct {
	Run struct {
		ID, State, Error string
		ReplayOf         string `json:"replay_of"`
	}
	Events []struct{ From, To, Reason, Actor string }
	Notes  []struct{ Actor, Text string }
	Steps  []struct{ Step, Outcome string }
}

func (c *cli) show(t *testing.T, id string) fullShow {
	t.Helper()
	raw, err := c.command("runs", "show", id, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var doc fullShow
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestReviewApproveBindsTheProposal(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"team": "technical", "priority": "urgent", "summary": "outage"}`))
	target := newApplyTarget(t)
	c := newCLI(t, triageSpec)
	c.useTarget(target.URL)
	input := fmt.Sprintf(`{"id": "T-9", "url": %q}`, target.URL)
	if code, out := c.exec(t, model, "run", c.spec, "--input", input); code != 3 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	id := c.runsJSON()[0]["id"].(string)
	doc := c.state(t, id)
	var held struct {
		Proposal map[string]any `json:"proposal"`
		Hash     string         `json:"proposal_hash"`
	}
	for _, a := range doc.Attempts {
		if a.Outcome == "needs_review" {
			json.Unmarshal(a.Output, &held)
		}
	}
	if held.Hash == "" || held.Proposal["team"] != "technical" {
		t.Fatalf("held proposal %+v", held)
	}
	// What a reviewer reads: the proposal as indented JSON, each rule's verdict, why it was
	// held by path, what approving does, and the model call with tokens and latency.
	for _, args := range [][]string{{"review", id}, {"runs", "show", id}} {
		code, out := c.exec(t, nil, args...)
		for _, want := range []string{"held for review at step classify", "proposal  sha256 " + held.Hash, "\n      \"team\": \"technical\"\n",
			"failed  urgent tickets need a person  (on_fail review)", "/: urgent tickets need a person (rule, on_fail review)", "approving step classify succeeds with exactly this proposal"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Fatalf("%v: exit %d, want %q in:\n%s", args, code, want, out)
			}
		}
		if args[0] == "review" && !strings.Contains(out, "pipectl review "+id+" --approve --proposal-hash "+held.Hash) {
			t.Fatalf("review does not say how to decide:\n%s", out)
		}
		if args[0] == "runs" && !regexpLine(out, `model call classify #1 re-ask 0\s+review, gate review \d+ms\s+\S+, \d+\+\d+ tokens`) {
			t.Fatalf("runs show: no model call line with verdict, latency and tokens:\n%s", out)
		}
	}
	if code, out := c.exec(t, model, "review", id, "--approve", "--proposal-hash", strings.Repeat("0", 64)); code != 4 || !strings.Contains(out, "nothing was changed") {
		t.Fatalf("wrong hash: exit %d\n%s", code, out)
	}
	if got := c.state(t, id).Run.State; got != "needs_review" {
		t.Fatalf("a refused review changed the run: %s", got)
	}
	code, out := c.exec(t, model, "review", id, "--approve", "--proposal-hash", held.Hash, "--note", "outage confirmed", "--as", "alice")
	if code != 0 || !strings.Contains(out, "approved by alice") {
		t.Fatalf("approve: exit %d\n%s", code, out)
	}
	// The model was not asked again: the approved proposal is the step's output.
	if n := len(model.Requests()); n != 1 {
		t.Fatalf("the model was asked %d times", n)
	}
	_, requests := target.snapshot()
	if len(requests) != 1 {
		t.Fatalf("target got %d writes", len(requests))
	}
	full := c.show(t, id)
	if full.Run.State != "succeeded" {
		t.Fatalf("state %s", full.Run.State)
	}
	found := false
	for _, e := range full.Events {
		if e.From == "needs_review" && e.To == "processing" && e.Actor == "alice" && strings.Contains(e.Reason, held.Hash) && strings.Contains(e.Reason, "outage confirmed") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no approval event by alice naming the proposal: %+v", full.Events)
	}
	if code, out := c.exec(t, model, "review", id, "--approve"); code != 4 || !strings.Contains(out, "is succeeded, not needs_review") {
		t.Fatalf("review of a finished run: exit %d\n%s", code, out)
	}
}

func TestReviewReject(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"team": "technical", "priority": "urgent", "summary": "outage"}`))
	target := newApplyTarget(t)
	c := newCLI(t, triageSpec)
	c.useTarget(target.URL)
	c.exec(t, model, "run", c.spec, "--input", fmt.Sprintf(`{"id": "T-10", "url": %q}`, target.URL))
	id := c.runsJSON()[0]["id"].(string)
	if code, out := c.exec(t, model, "review", id, "--reject", "--note", "not an outage", "--as", "bob"); code != 1 || !strings.Contains(out, "rejected by bob") {
		t.Fatalf("reject: exit %d\n%s", code, out)
	}
	full := c.show(t, id)
	if full.Run.State != "failed_permanent" || !strings.Contains(full.Run.Error, "not an outage") {
		t.Fatalf("run %+v", full.Run)
	}
	if _, requests := target.snapshot(); len(requests) != 0 {
		t.Fatal("a rejected proposal reached the target")
	}
}

const waitSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: waiter
inputs: {type: object, properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: start
    type: transform
    output: started
  - id: callback
    type: wait
    timeout: %s
    schema:
      type: object
      additionalProperties: false
      required: [status]
      properties:
        status: {enum: [ok, failed]}
        amount: {type: number}
  - id: finish
    type: transform
    output: "${{ steps.callback.output.status }}"
`

func TestSignalDeliversTheWaitPayload(t *testing.T) {
	c := newCLI(t, fmt.Sprintf(waitSpec, "1h"))
	if code, out := c.exec(t, nil, "run", c.spec, "--input", `{"id": "w1"}`); code != 3 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	id := c.runsJSON()[0]["id"].(string)
	if got := c.show(t, id).Run.State; got != "waiting_external" {
		t.Fatalf("state %s", got)
	}
	for _, tc := range []struct{ step, data, want string }{
		{"callback", `{"status": "maybe"}`, "/status: value must be one of"},
		{"callback", `{"status": "ok", "extra": 1}`, "additionalProperties"},
		{"start", `{"status": "ok"}`, "waits on step callback, not start"},
	} {
		code, out := c.exec(t, nil, "signal", id, tc.step, "--data", tc.data)
		if code != 4 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was changed") {
			t.Fatalf("signal %s %s: exit %d\n%s", tc.step, tc.data, code, out)
		}
	}
	if got := c.show(t, id).Run.State; got != "waiting_external" {
		t.Fatalf("a refused signal changed the run: %s", got)
	}
	dataFile := filepath.Join(c.dir, "payload.json")
	os.WriteFile(dataFile, []byte(`{"status": "ok", "amount": 12}`), 0o644)
	if code, out := c.exec(t, nil, "signal", id, "callback", "--data", dataFile, "--as", "webhook"); code != 0 {
		t.Fatalf("signal: exit %d\n%s", code, out)
	}
	doc := c.state(t, id)
	last := doc.Attempts[len(doc.Attempts)-1]
	if doc.Run.State != "succeeded" || string(last.Output) != `"ok"` {
		t.Fatalf("run %s, last output %s", doc.Run.State, last.Output)
	}
	if code, out := c.exec(t, nil, "signal", id, "callback", "--data", dataFile); code != 4 || !strings.Contains(out, "is succeeded, not waiting_external") {
		t.Fatalf("signal to a finished run: exit %d\n%s", code, out)
	}
}

func TestWaitTimeoutDeadLetters(t *testing.T) {
	c := newCLI(t, fmt.Sprintf(waitSpec, "300ms"))
	c.exec(t, nil, "run", c.spec, "--input", `{"id": "w2"}`)
	id := c.runsJSON()[0]["id"].(string)
	time.Sleep(500 * time.Millisecond)
	code, out := c.exec(t, nil, "signal", id, "callback", "--data", `{"status": "ok"}`)
	if code != 4 || !strings.Contains(out, "is failed_permanent") {
		t.Fatalf("late signal: exit %d\n%s", code, out)
	}
	full := c.show(t, id)
	if full.Run.State != "failed_permanent" || !strings.Contains(full.Run.Error, "timeout passed without a signal") {
		t.Fatalf("run %+v", full.Run)
	}
}

func TestNotes(t *testing.T) {
	c := newCLI(t, fmt.Sprintf(waitSpec, "1h"))
	c.exec(t, nil, "run", c.spec, "--input", `{"id": "n1"}`)
	id := c.runsJSON()[0]["id"].(string)
	if code, out := c.exec(t, nil, "note", id, "customer", "called", "back", "--as", "carol"); code != 0 {
		t.Fatalf("note: exit %d\n%s", code, out)
	}
	full := c.show(t, id)
	if len(full.Notes) != 1 || full.Notes[0].Actor != "carol" || full.Notes[0].Text != "customer called back" {
		t.Fatalf("notes %+v", full.Notes)
	}
	if code, out := c.exec(t, nil, "note", "nosuchrun", "x"); code != 2 || !strings.Contains(out, "no run nosuchrun") {
		t.Fatalf("note on unknown run: exit %d\n%s", code, out)
	}
	table, _ := c.command("runs", "show", id).Output()
	if !strings.Contains(string(table), "by carol") || !strings.Contains(string(table), "customer called back") {
		t.Fatalf("runs show does not list the note:\n%s", table)
	}
}

const slowSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: slow
inputs: {type: object, properties: {id: {type: string}, dir: {type: string, pattern: "^[^\\x00]+$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: one, type: exec, command: [sh, "-uc", 'sleep 1.5; echo x >> "$DIR/one"'], env: {DIR: "${{ inputs.dir }}"}}
  - {id: two, type: exec, command: [sh, "-uc", 'echo x >> "$DIR/two"'], env: {DIR: "${{ inputs.dir }}"}}
`

func TestKillSwitch(t *testing.T) {
	c := newCLI(t, slowSpec)
	input := fmt.Sprintf(`{"id": "k1", "dir": %q}`, c.dir)
	if code, out := c.exec(t, nil, "disable", "slow", "--reason", "vendor outage", "--as", "dave", "--pipelines", c.dir); code != 0 {
		t.Fatalf("disable: %d %s", code, out)
	}
	code, out := c.exec(t, nil, "run", c.spec, "--input", input)
	if code != 4 || !strings.Contains(out, "vendor outage, by dave") {
		t.Fatalf("run while disabled: exit %d\n%s", code, out)
	}
	if len(c.runsJSON()) != 0 {
		t.Fatal("a refused run was created")
	}
	c.exec(t, nil, "enable", "slow", "--as", "dave")
	// Disable while the first step runs: the run stops after it and waits.
	cmd := c.command("run", c.spec, "--input", input)
	var outBuf strings.Builder
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	c.exec(t, nil, "disable", "slow", "--reason", "stop now")
	err := cmd.Wait()
	if code := exitCodeOf(err); code != 3 || !strings.Contains(outBuf.String(), "stopped and waits") {
		t.Fatalf("disabled mid-run: exit %d\n%s", code, outBuf.String())
	}
	if _, err := os.Stat(filepath.Join(c.dir, "one")); err != nil {
		t.Fatal("the current step did not finish")
	}
	if _, err := os.Stat(filepath.Join(c.dir, "two")); err == nil {
		t.Fatal("the next step ran while the pipeline was disabled")
	}
	c.exec(t, nil, "enable", "slow")
	if code, out := c.exec(t, nil, "run", c.spec, "--input", input); code != 0 || !strings.Contains(out, "resumed") {
		t.Fatalf("resume after enable: exit %d\n%s", code, out)
	}
	one, _ := os.ReadFile(filepath.Join(c.dir, "one"))
	two, _ := os.ReadFile(filepath.Join(c.dir, "two"))
	if string(one) != "x\n" || string(two) != "x\n" {
		t.Fatalf("steps ran %q and %q", one, two)
	}
}

const dlqSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: orders
inputs: {type: object, properties: {id: {type: string, pattern: "^[A-Za-z0-9][A-Za-z0-9-]{0,40}$"}, url: {const: "http://target.invalid"}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 20ms}
steps:
  - {id: charge, type: http, method: POST, url: "${{ inputs.url }}/charge"}
  - {id: ship, type: http, method: POST, url: "${{ inputs.url }}/ship"}
`

// flakyShipping applies each Idempotency-Key once and fails /ship while down is set.
type flakyShipping struct {
	*httptest.Server
	down    atomic.Bool
	applied map[string]int
	mu      chan struct{}
}

func newFlakyShipping(t *testing.T) *flakyShipping {
	f := &flakyShipping{applied: map[string]int{}, mu: make(chan struct{}, 1)}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/ship") && f.down.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		f.mu <- struct{}{}
		f.applied[r.URL.Path+" "+r.Header.Get("Idempotency-Key")]++
		<-f.mu
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *flakyShipping) counts() map[string]int {
	f.mu <- struct{}{}
	defer func() { <-f.mu }()
	out := map[string]int{}
	for k, v := range f.applied {
		out[k] = v
	}
	return out
}

func TestDeadLetterRedriveAndReplay(t *testing.T) {
	target := newFlakyShipping(t)
	target.down.Store(true)
	c := newCLI(t, dlqSpec)
	c.useTarget(target.URL)
	input := fmt.Sprintf(`{"id": "o-1", "url": %q}`, target.URL)
	if code, out := c.exec(t, nil, "run", c.spec, "--input", input); code != 1 {
		t.Fatalf("run: exit %d\n%s", code, out)
	}
	id := c.runsJSON()[0]["id"].(string)
	code, out := c.exec(t, nil, "dlq", "list")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "ship") || !strings.Contains(out, "transient") {
		t.Fatalf("dlq list: exit %d\n%s", code, out)
	}
	// Replaying while dead-lettered: the charge was applied; its step key is reused, so the
	// target deduplicates it. Shipping still fails.
	code, out = c.exec(t, nil, "replay", id)
	if code != 1 || !strings.Contains(out, "step keys are the original run's") {
		t.Fatalf("replay: exit %d\n%s", code, out)
	}
	var charge string
	for k, n := range target.counts() {
		if strings.HasPrefix(k, "/charge ") {
			charge = k
			if n != 2 {
				t.Fatalf("charge reached the target %d times; want 2 deliveries of one key", n)
			}
		}
	}
	if charge == "" || len(target.counts()) != 1 {
		t.Fatalf("keys at the target: %v", target.counts())
	}
	target.down.Store(false)
	// Redriving a run that is not dead-lettered is refused and changes nothing.
	runs := c.runsJSON()
	var replayID string
	for _, r := range runs {
		if r["id"] != id {
			replayID = r["id"].(string)
		}
	}
	code, out = c.exec(t, nil, "dlq", "redrive", id, "--as", "erin")
	if code != 0 || !strings.Contains(out, "redriven by erin") {
		t.Fatalf("redrive: exit %d\n%s", code, out)
	}
	full := c.show(t, id)
	if full.Run.State != "succeeded" {
		t.Fatalf("redriven run is %s", full.Run.State)
	}
	counts := target.counts()
	if counts[charge] != 2 {
		t.Fatalf("the redrive re-ran the completed charge step: %v", counts)
	}
	if code, out := c.exec(t, nil, "dlq", "redrive", id); code != 4 || !strings.Contains(out, "is succeeded; only dead-lettered") {
		t.Fatalf("redrive of a succeeded run: exit %d\n%s", code, out)
	}
	// A replay from a step reuses what came before it.
	code, out = c.exec(t, nil, "replay", id, "--from", "ship")
	if code != 0 || !strings.Contains(out, "reused the recorded outputs of charge") {
		t.Fatalf("replay --from: exit %d\n%s", code, out)
	}
	if target.counts()[charge] != 2 {
		t.Fatal("replay --from ship called charge again")
	}
	replay := c.show(t, replayID)
	if replay.Run.ReplayOf != id {
		t.Fatalf("replay_of = %q", replay.Run.ReplayOf)
	}
}

func TestReplayOfLiveRunRefused(t *testing.T) {
	c := newCLI(t, slowSpec)
	input := fmt.Sprintf(`{"id": "live", "dir": %q}`, c.dir)
	cmd := c.command("run", c.spec, "--input", input)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(c.runsJSON()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	id := c.runsJSON()[0]["id"].(string)
	code, out := c.exec(t, nil, "replay", id)
	if code != 4 || !strings.Contains(out, "still live") {
		t.Fatalf("replay of a live run: exit %d\n%s", code, out)
	}
	if n := len(c.runsJSON()); n != 1 {
		t.Fatalf("a refused replay created a run: %d runs", n)
	}
}

func TestStatsCheck(t *testing.T) {
	target := newFlakyShipping(t)
	spec := strings.Replace(dlqSpec, "defaults:", "alerts: {dead_letter_rate: 0.4, p95_seconds: 60}\ndefaults:", 1)
	c := newCLI(t, spec)
	c.useTarget(target.URL)
	c.exec(t, nil, "run", c.spec, "--input", fmt.Sprintf(`{"id": "s-1", "url": %q}`, target.URL))
	if code, out := c.exec(t, nil, "stats", "--check"); code != 0 {
		t.Fatalf("stats --check with no breach: exit %d\n%s", code, out)
	}
	target.down.Store(true)
	c.exec(t, nil, "run", c.spec, "--input", fmt.Sprintf(`{"id": "s-2", "url": %q}`, target.URL))
	code, out := c.exec(t, nil, "stats", "--check")
	if code != 1 || !strings.Contains(out, "BREACH orders: dead-letter rate 50.00% > 40.00%") {
		t.Fatalf("stats --check: exit %d\n%s", code, out)
	}
	raw, _ := c.command("stats", "--format", "json").Output()
	var doc struct {
		Pipelines []struct {
			Runs, Succeeded int
			DeadLettered    int `json:"dead_lettered"`
			Steps           []struct{ Step string }
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Pipelines) != 1 || len(doc.Pipelines[0].Steps) != 2 {
		t.Fatalf("stats json: %v\n%s", err, raw)
	}
}

func TestMissingSecretRefusesBeforeAnything(t *testing.T) {
	c := newCLI(t, sideEffectSpec)
	target := newApplyTarget(t)
	c.useTarget(target.URL)
	cmd := exec.Command(binary, "--ledger", c.ledger, "run", c.spec, "--input", fmt.Sprintf(`{"id": "m-1", "url": %q}`, target.URL))
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.dir}
	out, err := cmd.CombinedOutput()
	if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "needs the secret(s) TARGET_TOKEN") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if len(c.runsJSON()) != 0 {
		t.Fatal("a run was created without its secret")
	}
	if _, requests := target.snapshot(); len(requests) != 0 {
		t.Fatal("a step ran without its secret")
	}
}

func TestReplayWithFixedSpec(t *testing.T) {
	target := newFlakyShipping(t)
	target.down.Store(true)
	c := newCLI(t, dlqSpec)
	c.useTarget(target.URL)
	c.exec(t, nil, "run", c.spec, "--input", fmt.Sprintf(`{"id": "f-1", "url": %q}`, target.URL))
	id := c.runsJSON()[0]["id"].(string)
	// The fix: ship to another endpoint that works.
	fixed := filepath.Join(c.dir, "fixed.yaml")
	spec := strings.ReplaceAll(dlqSpec, targetURL, target.URL)
	os.WriteFile(fixed, []byte(strings.Replace(spec, `/ship"`, `/ship-v2"`, 1)), 0o644)
	other := filepath.Join(c.dir, "other.yaml")
	os.WriteFile(other, []byte(strings.Replace(spec, "name: orders", "name: invoices", 1)), 0o644)
	if code, out := c.exec(t, nil, "replay", id, "--spec", other); code != 2 || !strings.Contains(out, "belongs to orders") {
		t.Fatalf("replay with another pipeline's spec: exit %d\n%s", code, out)
	}
	code, out := c.exec(t, nil, "replay", id, "--spec", fixed, "--from", "ship")
	if code != 0 || !strings.Contains(out, "reused the recorded outputs of charge") {
		t.Fatalf("replay --spec: exit %d\n%s", code, out)
	}
	counts := target.counts()
	shipped := false
	for k := range counts {
		shipped = shipped || strings.HasPrefix(k, "/ship-v2 ")
	}
	if !shipped {
		t.Fatalf("the fixed spec was not used: %v", counts)
	}
}

// TestEnqueuedDecisionIsTakenByAWorker: review --enqueue hands the approved run to workers.
func TestEnqueuedDecisionIsTakenByAWorker(t *testing.T) {
	c := newCLI(t, fmt.Sprintf(waitSpec, "1h"))
	c.exec(t, nil, "run", c.spec, "--input", `{"id": "e-1"}`)
	id := c.runsJSON()[0]["id"].(string)
	if code, out := c.exec(t, nil, "signal", id, "callback", "--data", `{"status": "ok"}`, "--enqueue"); code != 0 {
		t.Fatalf("signal --enqueue: exit %d\n%s", code, out)
	}
	if got := c.show(t, id).Run.State; got != "processing" {
		t.Fatalf("after --enqueue the run is %s", got)
	}
	w := startWorker(t, c.dir, c.ledger)
	defer func() { w.cmd.Process.Signal(syscall.SIGTERM); w.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for c.show(t, id).Run.State != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not finish the run:\n%s", w.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
