package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const preflightSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: preflight
inputs: {type: object, properties: {id: {type: string, pattern: "^[a-z0-9-]{1,20}$"}}}
idempotency: {key: "${{ inputs.id }}"}
secrets: [PREFLIGHT_TOKEN]
steps:
  - id: classify
    type: llm
    model: test-model
    prompt: "Classify ${{ inputs.id }}"
    output:
      schema: {type: object, additionalProperties: false, required: [team], properties: {team: {enum: [billing, technical]}}}
  - {id: apply, type: exec, command: ["COMMAND", "${{ steps.classify.output.team }}"]}
`

// TestPreflightWritesNothing: each attack is a run that would be created, retried and
// dead-lettered with its idempotency key used up, for a cause known before it starts. The
// preflight refuses it with exit 2, and the ledger is not even opened.
func TestPreflightWritesNothing(t *testing.T) {
	recording := `{"version": 1, "exchanges": [{"key": "k", "request": {"step": "other", "model": "m", "messages": []}, "response": {"content": "{}"}}]}`
	for _, tc := range []struct {
		name    string
		command string
		env     []string
		args    []string
		want    string
	}{
		{"no key for the OpenAI API", "true", []string{"OPENAI_BASE_URL="}, nil, "the default model provider (the OpenAI API) needs its key: $OPENAI_API_KEY is not set"},
		{"no key for a remote gateway", "true", []string{"OPENAI_BASE_URL=https://gateway.example/v1"}, nil, "needs its key"},
		{"a recording without the step", "true", nil, []string{"--llm-replay", "rec.json"}, "step classify: the --llm-replay recording has no answer for it"},
		{"a command not on PATH", "no-such-tool-4711", []string{"OPENAI_API_KEY=k"}, nil, `step apply: command "no-such-tool-4711" is not an executable on PATH`},
		{"a missing script beside the pipeline", "./bin/apply.sh", []string{"OPENAI_API_KEY=k"}, nil, "bin/apply.sh does not exist"},
		{"a script that is not executable", "./notexec.sh", []string{"OPENAI_API_KEY=k"}, nil, "notexec.sh is not executable"},
		{"a missing secret", "true", []string{"OPENAI_API_KEY=k", "PREFLIGHT_TOKEN="}, nil, "needs the secret(s) PREFLIGHT_TOKEN"},
		{"every problem at once", "./bin/apply.sh", []string{"OPENAI_BASE_URL="}, nil, "needs its key: $OPENAI_API_KEY is not set\n  step apply: command ./bin/apply.sh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t, strings.Replace(preflightSpec, "COMMAND", tc.command, 1))
			os.WriteFile(filepath.Join(c.dir, "rec.json"), []byte(recording), 0o644)
			os.WriteFile(filepath.Join(c.dir, "notexec.sh"), []byte("#!/bin/sh\n"), 0o644)
			for _, verb := range []string{"run", "submit"} {
				if verb == "submit" && len(tc.args) > 0 {
					continue // submit takes no recording
				}
				cmd := c.command(append([]string{verb, c.spec, "--input", `{"id": "a"}`}, tc.args...)...)
				cmd.Env = append(cmd.Env, "OPENAI_API_KEY=", "PREFLIGHT_TOKEN=pf-token-123456")
				cmd.Env = append(cmd.Env, tc.env...)
				out, err := cmd.CombinedOutput()
				if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), tc.want) {
					t.Fatalf("%s: exit %d, want 2 and %q:\n%s", verb, code, tc.want, out)
				}
				if _, err := os.Stat(filepath.Join(c.dir, "ledger.db")); err == nil {
					t.Fatalf("%s: the ledger was created by a run that failed its preflight", verb)
				}
			}
		})
	}
}

// TestPreflightPasses: what the preflight must not refuse. A model server on this machine
// needs no key, a script beside the pipeline is found there, a dry run renders exec commands
// without running them, and submit --no-preflight leaves the checks to the workers.
func TestPreflightPasses(t *testing.T) {
	c := newCLI(t, strings.Replace(preflightSpec, "COMMAND", "./bin/apply.sh", 1))
	os.Mkdir(filepath.Join(c.dir, "bin"), 0o755)
	probe := func(args []string, env ...string) (int, string) {
		cmd := c.command(append(args, "--input", `{"id": "a"}`)...)
		cmd.Env = append(cmd.Env, append([]string{"OPENAI_API_KEY=", "PREFLIGHT_TOKEN=pf-token-123456", "OPENAI_BASE_URL=http://127.0.0.1:9/v1"}, env...)...)
		out, err := cmd.CombinedOutput()
		return exitCodeOf(err), string(out)
	}
	if code, out := probe([]string{"submit", c.spec, "--no-preflight"}); code != 0 {
		t.Fatalf("submit --no-preflight: exit %d\n%s", code, out)
	}
	if code, out := probe([]string{"run", c.spec, "--dry-run"}, "OPENAI_BASE_URL=http://127.0.0.1:9/v1"); strings.Contains(out, "preflight of") || code == 2 {
		t.Fatalf("a dry run was refused for its exec command: exit %d\n%s", code, out)
	}
	os.WriteFile(filepath.Join(c.dir, "bin", "apply.sh"), []byte("#!/bin/sh\necho \"$1\"\n"), 0o755)
	// The key is not needed on loopback: the run passes the preflight and reaches the model
	// call, which fails at the closed port: the run exists, so the preflight let it through.
	code, out := probe([]string{"submit", c.spec})
	if code != 0 || strings.Contains(out, "preflight of") {
		t.Fatalf("submit with a loopback provider and the script in place: exit %d\n%s", code, out)
	}
}
