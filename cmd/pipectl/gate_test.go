package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// weakSpec lets run inputs, which no schema here constrains for these positions, reach an
// argv, a url path and a header. The real validator refuses it; a build whose static check
// is switched off (the pipectl_weaken_taint tag) accepts it, and then only the engine's
// run-time check stands between the values and the side effects.
const weakSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: weak
inputs:
  type: object
  properties:
    name: {type: string}
    page: {type: string}
    note: {type: string}
steps:
  - id: touch
    type: exec
    command: [./record.sh, "${{ inputs.name }}"]
  - id: fetch
    type: http
    method: POST
    url: http://target.invalid/items/${{ inputs.page }}
    headers:
      X-Note: ${{ inputs.note }}
`

// TestRuntimeGateStopsWhatAWeakenedValidatorLetsThrough builds pipectl with the static taint
// check switched off and shows that the run-time check alone refuses hostile values before
// any process starts or any request leaves, and lets harmless ones through.
func TestRuntimeGateStopsWhatAWeakenedValidatorLetsThrough(t *testing.T) {
	weak := filepath.Join(t.TempDir(), "pipectl-weak")
	if out, err := exec.Command("go", "build", "-tags", "pipectl_weaken_taint", "-o", weak, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	cases := []struct {
		name, input string
		ok          bool
		field       string
	}{
		{"harmless values pass", `{"name": "alice", "page": "p1", "note": "hello"}`, true, ""},
		{"an option smuggled into argv", `{"name": "--output=/etc/passwd", "page": "p1", "note": "x"}`, false, "steps[0].command[1]"},
		{"a path traversal in the url", `{"name": "bob", "page": "../admin", "note": "x"}`, false, "steps[1].url"},
		{"a query smuggled into the url path", `{"name": "bob", "page": "p?admin=1", "note": "x"}`, false, "steps[1].url"},
		{"CRLF in a header", "{\"name\": \"bob\", \"page\": \"p1\", \"note\": \"x\\r\\nX-Admin: 1\"}", false, "steps[1].headers.X-Note"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t, weakSpec)
			c.useTarget(srv.URL)
			marker := filepath.Join(c.dir, "ran")
			script := "#!/bin/sh\nprintf '%s' \"$1\" > " + marker + "\n"
			if err := os.WriteFile(filepath.Join(c.dir, "record.sh"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			// The release build refuses the spec outright.
			if code, out := c.exec(t, nil, "validate", c.spec); code != 1 || !strings.Contains(out, "run input inputs.name reaches exec argument 1") {
				t.Fatalf("release validate: exit %d\n%s", code, out)
			}
			before := requests.Load()
			cmd := exec.Command(weak, "--ledger", c.ledger, "run", c.spec, "--input", tc.input)
			cmd.Dir = c.dir
			out, err := cmd.CombinedOutput()
			code := exitCodeOf(err)
			doc := showRun(t, c)
			if tc.ok {
				if code != 0 || doc.Run.State != "succeeded" {
					t.Fatalf("exit %d state %s\n%s", code, doc.Run.State, out)
				}
				if got, _ := os.ReadFile(marker); string(got) != "alice" {
					t.Fatalf("the exec step wrote %q", got)
				}
				if requests.Load() != before+1 {
					t.Fatal("the http step sent no request")
				}
				return
			}
			if code != 1 || doc.Run.State != "failed_permanent" {
				t.Fatalf("exit %d state %s, want a dead-lettered run\n%s", code, doc.Run.State, out)
			}
			if !strings.Contains(doc.Run.Error, tc.field+": refused before the step ran (run-time gate check)") {
				t.Fatalf("error %q does not name %s and the run-time check", doc.Run.Error, tc.field)
			}
			if tc.field == "steps[0].command[1]" {
				if _, err := os.Stat(marker); err == nil {
					t.Fatal("the exec step ran with the hostile argument")
				}
			}
			if requests.Load() != before {
				t.Fatalf("%d requests left for a refused value", requests.Load()-before)
			}
			// The refusal is an attempt in the ledger, with its error.
			found := false
			for _, a := range doc.Attempts {
				found = found || a.Outcome == "failed"
			}
			if !found {
				t.Fatalf("no failed attempt recorded: %+v", doc.Attempts)
			}
		})
	}
}

// respecV1 lets the model choose any mode; nothing reaches a side effect with it yet. The
// second step is slow, so that the run can be killed after the proposal was recorded.
const respecV1 = `apiVersion: pipectl/v1
kind: Pipeline
name: respec
inputs: {type: object, properties: {id: {type: string, pattern: "^[a-z0-9-]+$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: pick
    type: llm
    model: test-model
    prompt: pick a mode
    output: {schema: {type: object, additionalProperties: false, required: [mode], properties: {mode: {type: string}}}}
  - id: act
    type: exec
    command: [sh, -c, "sleep 30"]
`

// respecV2 narrows the mode to an enum and passes it to a program: valid on its own, and safe
// for any proposal gated by it, but not for one gated by respecV1.
const respecV2 = `apiVersion: pipectl/v1
kind: Pipeline
name: respec
inputs: {type: object, properties: {id: {type: string, pattern: "^[a-z0-9-]+$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: pick
    type: llm
    model: test-model
    prompt: pick a mode
    output: {schema: {type: object, additionalProperties: false, required: [mode], properties: {mode: {enum: [fast, safe]}}}}
  - id: act
    type: exec
    command: [./tool.sh, "${{ steps.pick.output.mode }}"]
`

// TestEditedSpecCannotLaunderAResumedRun: a run is killed after its proposal was gated by
// one spec; re-running the command with an edited spec is refused (exit 4, both hashes
// named, nothing changed); accepting the change re-gates the recorded proposal, which fails
// the new enum, so it is refused too and the program never sees the proposal; an edit the
// recorded outputs do pass is accepted, recorded as an event, and the run finishes.
func TestEditedSpecCannotLaunderAResumedRun(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"mode": "--delete-everything"}`))
	c := newCLI(t, respecV1)
	marker := filepath.Join(c.dir, "tool-ran")
	if err := os.WriteFile(filepath.Join(c.dir, "tool.sh"), []byte("#!/bin/sh\nprintf '%s' \"$1\" > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := c.command("run", c.spec, "--input", `{"id": "r-1"}`)
	cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		doc := showRunMaybe(c)
		if doc != nil && len(doc.Attempts) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the run never reached its second step")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	before := showRun(t, c)
	if before.Run.State != "processing" {
		t.Fatalf("state %s after the kill, want processing", before.Run.State)
	}
	ledgerBefore := c.ledgerSnapshot(t, before.Run.ID)

	if err := os.WriteFile(c.spec, []byte(respecV2), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "r-1"}`)
	if code != 4 || !strings.Contains(out, "was created from spec sha256") || !strings.Contains(out, "--accept-spec-change") {
		t.Fatalf("resume with an edited spec: exit %d\n%s", code, out)
	}
	code, out = c.exec(t, model, "run", c.spec, "--input", `{"id": "r-1"}`, "--accept-spec-change")
	if code != 4 || !strings.Contains(out, "recorded output of step pick does not pass its gate") {
		t.Fatalf("accepted change with a proposal the new gate refuses: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran with the proposal that the edited spec refuses")
	}
	if after := c.ledgerSnapshot(t, before.Run.ID); after != ledgerBefore {
		t.Fatalf("a refused resume changed the ledger:\nbefore %s\nafter  %s", ledgerBefore, after)
	}

	// An edit that the recorded proposal passes: the slow step becomes quick.
	v3 := strings.Replace(respecV1, `"sleep 30"`, `"true"`, 1)
	if err := os.WriteFile(c.spec, []byte(v3), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = c.exec(t, model, "run", c.spec, "--input", `{"id": "r-1"}`, "--accept-spec-change")
	if code != 0 {
		t.Fatalf("accepted compatible change: exit %d\n%s", code, out)
	}
	raw, err := c.command("runs", "show", before.Run.ID, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "spec changed from sha256") || !strings.Contains(string(raw), `"state": "succeeded"`) && !strings.Contains(string(raw), `"state":"succeeded"`) {
		t.Fatalf("the run does not record the accepted spec change or did not finish:\n%.3000s", raw)
	}
	if n := len(model.Requests()); n != 1 {
		t.Fatalf("%d model calls: a resumed run must not ask the model again", n)
	}
}

// TestReplayUnderAnotherSpecRegates: a replay that reuses a proposal gated by the original
// spec under a spec that narrows it is refused before any run is created; a full replay asks
// again (here: the recording), and the new gate stops the proposal before the program.
func TestReplayUnderAnotherSpecRegates(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"mode": "--delete-everything"}`))
	c := newCLI(t, strings.Replace(respecV1, `"sleep 30"`, `"true"`, 1))
	marker := filepath.Join(c.dir, "tool-ran")
	if err := os.WriteFile(filepath.Join(c.dir, "tool.sh"), []byte("#!/bin/sh\nprintf '%s' \"$1\" > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "r-2"}`); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, out)
	}
	orig := showRun(t, c).Run.ID
	v2 := filepath.Join(c.dir, "v2.yaml")
	if err := os.WriteFile(v2, []byte(respecV2), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := c.exec(t, model, "replay", orig, "--spec", v2, "--from", "act")
	if code != 4 || !strings.Contains(out, "recorded output of step pick does not pass its gate") {
		t.Fatalf("replay reusing the proposal: exit %d\n%s", code, out)
	}
	if n := len(c.runsJSON()); n != 1 {
		t.Fatalf("%d runs: a refused replay must create none", n)
	}
	code, out = c.exec(t, model, "replay", orig, "--spec", v2)
	if code != 1 {
		t.Fatalf("full replay with the recorded answer: exit %d, want the new gate to dead-letter it\n%s", code, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran with a proposal the replay's spec refuses")
	}
}

// showRunMaybe is showRun for a ledger that may not exist yet.
func showRunMaybe(c *cli) *shownRun {
	out, err := c.command("runs", "list", "--limit", "0", "--format", "json").Output()
	if err != nil {
		return nil
	}
	var runs []map[string]any
	if json.Unmarshal(out, &runs) != nil || len(runs) != 1 {
		return nil
	}
	raw, err := c.command("runs", "show", runs[0]["id"].(string), "--format", "json").Output()
	if err != nil {
		return nil
	}
	var doc shownRun
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	return &doc
}

// ledgerSnapshot is a run's whole record as JSON, to compare before and after a refusal.
func (c *cli) ledgerSnapshot(t *testing.T, id string) string {
	t.Helper()
	raw, err := c.command("runs", "show", id, "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestAdversarialMode runs `pipectl test --adversarial` on a pipeline whose schemas keep every
// position safe (no finding) and, in a build with the static check off, on one whose schemas
// do not: there the hostile values that pass the input schema are found and named.
func TestAdversarialMode(t *testing.T) {
	safe := `apiVersion: pipectl/v1
kind: Pipeline
name: adv
inputs:
  type: object
  required: [id, name]
  properties:
    id: {type: string, pattern: "^[A-Z]{2,5}-[0-9]{1,8}$"}
    name: {type: string, maxLength: 100}
steps:
  - id: call
    type: http
    method: POST
    url: https://api.example.com/tickets/${{ inputs.id }}
    body: {name: "${{ inputs.name }}"}
  - id: run
    type: exec
    command: [notify, --ticket, "${{ inputs.id }}"]
    stdin: ${{ inputs.name }}
`
	tests := `kind: PipelineTest
pipeline: adv.yaml
cases:
  - name: base
    input: {id: TCK-1, name: Ann}
    expect: {state: succeeded}
`
	dir := t.TempDir()
	writeFile(t, dir, "adv.yaml", safe)
	writeFile(t, dir, "adv.test.yaml", tests)
	code, out := runIn(t, dir, binary, "test", "--adversarial", ".")
	if code != 0 || !strings.Contains(out, "0 findings") || !strings.Contains(out, "1 passed, 0 failed") {
		t.Fatalf("safe pipeline: exit %d\n%s", code, out)
	}

	weak := filepath.Join(t.TempDir(), "pipectl-weak")
	if out, err := exec.Command("go", "build", "-tags", "pipectl_weaken_taint", "-o", weak, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	unsafe := strings.Replace(safe, `id: {type: string, pattern: "^[A-Z]{2,5}-[0-9]{1,8}$"}`, `id: {type: string, minLength: 1}`, 1)
	writeFile(t, dir, "adv.yaml", unsafe)
	if code, out := runIn(t, dir, binary, "validate", "adv.yaml"); code != 1 {
		t.Fatalf("the release build must refuse the unsafe spec: exit %d\n%s", code, out)
	}
	code, out = runIn(t, dir, weak, "test", "--adversarial", ".")
	if code != 1 || !strings.Contains(out, `adversarial: input /id = "-rf"`) || !strings.Contains(out, "only the run-time gate check stopped it") {
		t.Fatalf("unsafe pipeline: exit %d\n%.4000s", code, out)
	}
}

func runIn(t *testing.T, dir, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return exitCodeOf(err), string(out)
}
