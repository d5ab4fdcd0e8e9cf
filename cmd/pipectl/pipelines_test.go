package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestKillSwitchRefusesUnknownNames: the attack is a typo at 2 a.m. The switch of a pipeline
// nobody knows is refused with the nearest name, and nothing at all is recorded.
func TestKillSwitchRefusesUnknownNames(t *testing.T) {
	c := newCLI(t, slowSpec)
	history := func() []map[string]any {
		t.Helper()
		raw, err := c.command("pipelines", "history", "--format", "json").Output()
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		var h []map[string]any
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatalf("history json: %v\n%s", err, raw)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"typo with the folder", []string{"disable", "slwo", "--reason", "x", "--pipelines", c.dir}, "did you mean slow?"},
		{"typo of enable", []string{"enable", "sloww", "--pipelines", c.dir}, "did you mean slow?"},
		{"unknown to an empty ledger", []string{"disable", "slow", "--reason", "x"}, "one that has never run is known through --pipelines DIR"},
		{"far from every name", []string{"disable", "billing-export", "--reason", "x", "--pipelines", c.dir}, "pipectl pipelines list shows the known ones"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := c.exec(t, nil, tc.args...)
			if code != 2 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was recorded") {
				t.Fatalf("exit %d, want 2 and %q:\n%s", code, tc.want, out)
			}
			if h := history(); len(h) != 0 {
				t.Fatalf("a refused toggle was recorded: %v", h)
			}
		})
	}

	// The folder's pipeline is accepted; repeating the toggle says so and keeps both.
	if code, out := c.exec(t, nil, "disable", "slow", "--reason", "vendor outage", "--as", "dave", "--pipelines", c.dir); code != 0 || !strings.Contains(out, "pipeline slow disabled by dave") {
		t.Fatalf("disable: %d %s", code, out)
	}
	// Now the ledger knows it: no folder needed, and a typo is matched against the ledger.
	code, out := c.exec(t, nil, "disable", "slow", "--reason", "still down", "--as", "erin")
	if code != 0 || !strings.Contains(out, `it was already disabled by dave`) || !strings.Contains(out, `"vendor outage"`) {
		t.Fatalf("repeated disable: %d %s", code, out)
	}
	if code, out := c.exec(t, nil, "enable", "SLOW"); code != 2 || !strings.Contains(out, "did you mean slow?") {
		t.Fatalf("case typo: %d %s", code, out)
	}
	h := history()
	if len(h) != 2 || h[0]["actor"] != "erin" || h[0]["reason"] != "still down" || h[1]["actor"] != "dave" {
		t.Fatalf("history, newest first: %v", h)
	}

	raw, err := c.command("pipelines", "list", "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["name"] != "slow" || list[0]["enabled"] != false || list[0]["by"] != "erin" || list[0]["why"] != "still down" || list[0]["source"] != "ledger" {
		t.Fatalf("pipelines list: %s", raw)
	}
	code, out = c.exec(t, nil, "pipelines", "list")
	if code != 0 || !strings.Contains(out, "PIPELINE") || !regexpLine(out, `slow\s+NO\s+erin\s+still down`) {
		t.Fatalf("pipelines list text: %d\n%s", code, out)
	}
	code, out = c.exec(t, nil, "pipelines", "history", "slow")
	if code != 0 || !regexpLine(out, `slow\s+disabled\s+erin\s+still down`) || !regexpLine(out, `slow\s+disabled\s+dave\s+vendor outage`) {
		t.Fatalf("history text: %d\n%s", code, out)
	}
}

// regexpLine reports whether a line of out matches the expression.
func regexpLine(out, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range strings.Split(out, "\n") {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// TestRunsShowFollow follows a run from another process while it executes: the timeline grows
// until the run ends, and the command exits by its state.
func TestRunsShowFollow(t *testing.T) {
	c := newCLI(t, slowSpec)
	runner := c.command("run", c.spec, "--input", fmt.Sprintf(`{"id": "f1", "dir": %q}`, c.dir))
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Wait()
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, err := c.command("runs", "list", "--format", "json").Output(); err == nil {
			var runs []map[string]any
			if json.Unmarshal(out, &runs) == nil && len(runs) == 1 {
				id = runs[0]["id"].(string)
			}
		}
	}
	if id == "" {
		t.Fatal("the run did not appear")
	}
	code, out := c.exec(t, nil, "runs", "show", id, "--follow", "--poll", "100ms")
	if code != 0 || !strings.Contains(out, "following until it ends") || !strings.Contains(out, "step two #1") ||
		!strings.Contains(out, "processing -> succeeded") || !strings.HasSuffix(out, "run "+id+" succeeded\n") {
		t.Fatalf("follow: exit %d\n%s", code, out)
	}
	// An attempt is printed when it starts and again when it ends; no line twice.
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if seen[l] {
			t.Fatalf("line printed twice: %q\n%s", l, out)
		}
		seen[l] = true
	}
	if !strings.Contains(out, "step one #1  succeeded") {
		t.Fatalf("the end of step one is missing:\n%s", out)
	}
}

const gateShowSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: gated
inputs: {type: object, properties: {id: {type: string}, total: {type: integer}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: check
    type: gate
    input: ${{ inputs }}
    schema: {type: object, required: [total]}
    rules:
      - expr: output.total <= 100
        message: totals above 100 are refused
`

// TestRunsShowGateVerdicts: runs show names a gate step's verdict and each reason by path,
// not only "succeeded" or "failed".
func TestRunsShowGateVerdicts(t *testing.T) {
	c := newCLI(t, gateShowSpec)
	c.exec(t, nil, "run", c.spec, "--input", `{"id": "ok", "total": 5}`)
	c.exec(t, nil, "run", c.spec, "--input", `{"id": "big", "total": 500}`)
	runs := c.runsJSON() // newest first
	_, out := c.exec(t, nil, "runs", "show", runs[0]["id"].(string))
	if !regexpLine(out, `step check #1\s+failed \d+ms\s+permanent: .*gate reject`) || !strings.Contains(out, "/: totals above 100 are refused (rule, on_fail reject)") {
		t.Fatalf("refused gate:\n%s", out)
	}
	_, out = c.exec(t, nil, "runs", "show", runs[1]["id"].(string))
	if !regexpLine(out, `step check #1\s+succeeded \d+ms\s+gate pass`) {
		t.Fatalf("passed gate:\n%s", out)
	}
}
