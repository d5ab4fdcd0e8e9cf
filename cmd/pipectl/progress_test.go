package main

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

const progressSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: progress
inputs: {type: object, properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: one, type: exec, command: [sleep, "0.4"]}
  - {id: two, type: exec, command: ["true"]}
`

// onTerminal runs pipectl with stdin, stdout and stderr on a pseudo-terminal, through
// script(1) from util-linux, and returns what the terminal received.
func onTerminal(t *testing.T, c *cli, env []string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) is not installed: no pseudo-terminal to test on")
	}
	quoted := []string{"'" + binary + "'", "--ledger", "'" + c.ledger + "'"}
	for _, a := range args {
		quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	cmd := exec.Command("script", "-qec", strings.Join(quoted, " "), "/dev/null")
	cmd.Dir = c.dir
	cmd.Env = append(c.command().Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("on a terminal: %v\n%q", err, out)
	}
	return string(out)
}

// TestProgressOnTerminal: on a pseudo-terminal the steps show live (a spinner line redrawn in
// place, a line per finished attempt, in color unless NO_COLOR), logs are text; without a
// terminal the default stays JSON lines with no escape sequence, and --log-format text gives
// plain progress lines.
func TestProgressOnTerminal(t *testing.T) {
	c := newCLI(t, progressSpec)
	out := onTerminal(t, c, nil, "run", c.spec, "--input", `{"id": "t1"}`)
	for _, want := range []string{"running one #1", "\r\x1b[K", "\x1b[32m✓\x1b[0m one #1 succeeded", "two #1 succeeded", "run "} {
		if !strings.Contains(out, want) {
			t.Fatalf("terminal output lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, `{"time"`) {
		t.Fatalf("JSON logs on a terminal:\n%q", out)
	}

	out = onTerminal(t, c, []string{"NO_COLOR=1"}, "run", c.spec, "--input", `{"id": "t2"}`)
	if !strings.Contains(out, "✓ one #1 succeeded") || strings.Contains(out, "\x1b[32m") {
		t.Fatalf("NO_COLOR: %q", out)
	}

	out = onTerminal(t, c, []string{"PIPECTL_LOG_FORMAT=json"}, "run", c.spec, "--input", `{"id": "t3"}`)
	if !strings.Contains(out, `"msg":"step attempt"`) || strings.Contains(out, "running one") {
		t.Fatalf("PIPECTL_LOG_FORMAT=json on a terminal: %q", out)
	}

	// Not a terminal: JSON lines by default, plain progress lines with text logs.
	code, plain := c.exec(t, nil, "run", c.spec, "--input", `{"id": "p1"}`)
	if code != 0 || !strings.Contains(plain, `"msg":"step attempt"`) || strings.Contains(plain, "✓") || strings.Contains(plain, "\x1b") {
		t.Fatalf("default without a terminal: exit %d\n%q", code, plain)
	}
	code, plain = c.exec(t, nil, "--log-format", "text", "run", c.spec, "--input", `{"id": "p2"}`)
	if code != 0 || !strings.Contains(plain, "✓ one #1 succeeded") || !strings.Contains(plain, "✓ two #1 succeeded") || strings.Contains(plain, "\x1b") || strings.Contains(plain, "running") {
		t.Fatalf("text without a terminal: exit %d\n%q", code, plain)
	}
}

const progressLLMSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: progress-llm
inputs: {type: object, properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: pick
    type: llm
    model: test-model
    prompt: pick
    max_reasks: 1
    output: {schema: {type: object, additionalProperties: false, required: [team], properties: {team: {enum: [billing, technical]}}}}
`

// TestProgressShowsModelCallsAsTheyHappen: a model call and the gate's verdict show while the
// attempt goes on. The first answer is rejected and the re-ask is answered slowly; the line of
// the first call must be out while the process still waits for the second.
func TestProgressShowsModelCallsAsTheyHappen(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"team": "sales"}`), llmtest.Reply{Content: `{"team": "billing"}`, Delay: 3 * time.Second})
	c := newCLI(t, progressLLMSpec)
	cmd := c.command("--log-format", "text", "run", c.spec, "--input", `{"id": "m1"}`)
	cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	var seen []string
	var firstAt, doneAt time.Time
	for lines.Scan() {
		line := lines.Text()
		seen = append(seen, line)
		switch {
		case strings.Contains(line, "model call pick #1 re-ask 0: rejected, gate reject"):
			firstAt = time.Now()
		case strings.Contains(line, "pick #1 succeeded"):
			doneAt = time.Now()
		}
	}
	cmd.Wait()
	out := strings.Join(seen, "\n")
	// The re-ask is answered 3 s after it was asked: a line shown as the call happened comes
	// that much before the attempt's end; one shown with the attempt's end comes with it.
	if firstAt.IsZero() || doneAt.IsZero() || doneAt.Sub(firstAt) < 1500*time.Millisecond {
		t.Fatalf("the first model call was not shown while the attempt went on (%s before its end):\n%s", doneAt.Sub(firstAt), out)
	}
	for _, want := range []string{"re-ask 1: accepted, gate pass", "pick #1 succeeded"} {
		if !strings.Contains(out, want) {
			t.Fatalf("progress lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "re-ask 0:") != 1 {
		t.Fatalf("a model call shown twice:\n%s", out)
	}
}
