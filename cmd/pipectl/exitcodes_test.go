package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
)

const exitSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: demo
inputs: {type: object, properties: {id: {type: string}, mode: {enum: [ok, review, fail]}}, required: [id, mode]}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: first, type: transform, output: "${{ inputs.id }}"}
  - {id: check, type: approval, message: "look", if: "${{ inputs.mode == 'review' }}"}
  - {id: boom, type: exec, command: ["false"], if: "${{ inputs.mode == 'fail' }}"}
`

// exitCase is one command line and the exit code it must end with; want is in its output.
type exitCase struct {
	name string
	args []string
	code int
	want string
}

// TestExitCodes runs every command's success and error paths against one real ledger and checks
// the exit code each ends with: 0 done, 1 failed or invalid, 2 usage (a name that does not
// exist, an unreadable file, a failed preflight), 3 paused, 4 refused. Every command of the
// tree must appear at least once, so a new command cannot be added without its row.
func TestExitCodes(t *testing.T) {
	c := newCLI(t, exitSpec)
	invalid := filepath.Join(c.dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("apiVersion: pipectl/v1\nkind: Pipeline\nname: Bad Name\nsteps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	idOf := func(key string) string {
		for _, r := range c.runsJSON() {
			if r["idempotency_key"] == key {
				return r["id"].(string)
			}
		}
		t.Fatalf("no run with key %s", key)
		return ""
	}
	// Three runs to act on: succeeded, paused in review, dead-lettered.
	for _, tc := range []exitCase{
		{"run succeeded", []string{"run", c.spec, "--input", `{"id": "ok", "mode": "ok"}`}, 0, "succeeded"},
		{"run paused", []string{"run", c.spec, "--input", `{"id": "rev", "mode": "review"}`}, 3, "needs_review"},
		{"run failed", []string{"run", c.spec, "--input", `{"id": "bad", "mode": "fail"}`}, 1, "failed_permanent"},
	} {
		if code, out := c.exec(t, nil, tc.args...); code != tc.code || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: exit %d\n%s", tc.name, code, out)
		}
	}
	ok, rev, bad := idOf("ok"), idOf("rev"), idOf("bad")

	cases := []exitCase{
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"runs", "list", "--frob"}, 2, "unknown flag"},
		{"bad ledger", []string{"--ledger", "mysql://x", "runs", "list"}, 2, "expected sqlite:PATH"},
		{"bad log format", []string{"--log-format", "xml", "run", c.spec, "--input", `{"id": "x", "mode": "ok"}`}, 2, "unknown log format \"xml\""},

		{"version", []string{"version"}, 0, "pipectl"},
		{"version with an argument", []string{"version", "x"}, 2, "unknown command"},
		{"schema", []string{"schema", "pipeline"}, 0, "$schema"},
		{"schema unknown", []string{"schema", "nosuch"}, 2, "unknown schema"},

		{"validate valid", []string{"validate", c.spec}, 0, "0 invalid"},
		{"validate invalid", []string{"validate", invalid}, 1, "1 invalid"},
		{"validate missing file", []string{"validate", "nosuch.yaml"}, 2, "nosuch.yaml"},
		{"validate bad format", []string{"validate", "--format", "xml", c.spec}, 2, "format"},

		{"run missing file", []string{"run", "nosuch.yaml", "--input", "{}"}, 2, "no such file"},
		{"run invalid pipeline", []string{"run", invalid, "--input", "{}"}, 1, "not a valid pipeline"},
		{"run input against the schema", []string{"run", c.spec, "--input", `{"id": 3, "mode": "ok"}`}, 1, "inputs schema"},
		{"run unreadable input", []string{"run", c.spec, "--input", "nosuch.json"}, 2, "input"},
		{"run without input", []string{"run", c.spec}, 2, "--input"},
		{"run duplicate succeeded", []string{"run", c.spec, "--input", `{"id": "ok", "mode": "ok"}`}, 0, "duplicate"},
		{"run duplicate paused", []string{"run", c.spec, "--input", `{"id": "rev", "mode": "review"}`}, 3, "duplicate"},
		{"run duplicate dead-lettered", []string{"run", c.spec, "--input", `{"id": "bad", "mode": "fail"}`}, 1, "next: pipectl dlq redrive"},
		{"run key reused with another input", []string{"run", c.spec, "--input", `{"id": "ok", "mode": "review"}`}, 4, "idempotency"},
		{"submit missing file", []string{"submit", "nosuch.yaml", "--input", "{}"}, 2, "no such file"},
		{"submit input against the schema", []string{"submit", c.spec, "--input", `{"id": "s", "mode": "nope"}`}, 1, "inputs schema"},
		{"submit", []string{"submit", c.spec, "--input", `{"id": "queued", "mode": "ok"}`}, 0, ""},

		{"runs list", []string{"runs", "list"}, 0, "RUN"},
		{"runs list bad state", []string{"runs", "list", "--state", "done"}, 2, "unknown --state"},
		{"runs list unknown pipeline", []string{"runs", "list", "--pipeline", "dmeo"}, 2, "did you mean demo?"},
		{"runs list bad format", []string{"runs", "list", "--format", "yaml"}, 2, "unknown --format"},
		{"runs show", []string{"runs", "show", ok}, 0, "succeeded"},
		{"runs show prefix", []string{"runs", "show", bad[:20]}, 0, "failed_permanent"},
		{"runs show unknown", []string{"runs", "show", "zzzzzzzzzzzz"}, 2, "no run zzzzzzzzzzzz"},
		{"runs show prefix too short", []string{"runs", "show", ok[:7]}, 2, "too short for a run id prefix: give at least 8 characters"},
		{"runs show without run", []string{"runs", "show"}, 2, "accepts 1 arg"},

		{"review unknown run", []string{"review", "zzzzzzzzzzzz", "--approve"}, 2, "no run"},
		{"review both decisions", []string{"review", rev, "--approve", "--reject"}, 2, "--approve or --reject"},
		{"review of a run not in review", []string{"review", ok, "--approve"}, 4, "not needs_review"},
		{"review shows what is to be decided", []string{"review", rev}, 0, "--approve"},
		{"review without decision, nothing to decide", []string{"review", ok}, 4, "nothing to decide"},
		{"runs show --follow of a finished run", []string{"runs", "show", ok, "--follow"}, 0, "run " + ok + " succeeded"},
		{"runs show --follow of a paused run", []string{"runs", "show", rev, "--follow"}, 3, "next: pipectl review"},
		{"runs show --follow as json", []string{"runs", "show", ok, "--follow", "--format", "json"}, 2, "--follow prints text"},
		{"signal without data", []string{"signal", rev, "check"}, 2, "--data is required"},
		{"signal unknown run", []string{"signal", "zzzzzzzzzzzz", "check", "--data", "{}"}, 2, "no run"},
		{"signal a run in review", []string{"signal", rev, "check", "--data", "{}"}, 4, "not waiting_external"},
		{"note", []string{"note", ok, "looked at it"}, 0, "note added"},
		{"note unknown run", []string{"note", "zzzzzzzzzzzz", "x"}, 2, "no run"},
		{"note without text", []string{"note", ok}, 2, "requires at least 2 arg"},

		{"disable without reason", []string{"disable", "demo"}, 2, "--reason is required"},
		{"disable typo", []string{"disable", "dmeo", "--reason", "x"}, 2, "did you mean demo?"},
		{"enable typo", []string{"enable", "dem"}, 2, "did you mean demo?"},
		{"disable", []string{"disable", "demo", "--reason", "drill"}, 0, "disabled"},
		{"run while disabled", []string{"run", c.spec, "--input", `{"id": "off", "mode": "ok"}`}, 4, "drill"},
		{"enable", []string{"enable", "demo"}, 0, "enabled"},
		{"pipelines list", []string{"pipelines", "list"}, 0, "demo"},
		{"pipelines list missing folder", []string{"pipelines", "list", "--pipelines", "nosuchdir"}, 2, "--pipelines"},
		{"pipelines history", []string{"pipelines", "history", "demo"}, 0, "drill"},
		{"pipelines history bad format", []string{"pipelines", "history", "--format", "csv"}, 2, "unknown --format"},

		{"dlq list", []string{"dlq", "list"}, 0, bad},
		{"dlq list unknown pipeline", []string{"dlq", "list", "--pipeline", "demoo"}, 2, "did you mean demo?"},
		{"dlq redrive unknown run", []string{"dlq", "redrive", "zzzzzzzzzzzz"}, 2, "no run"},
		{"dlq redrive live run", []string{"dlq", "redrive", ok}, 4, "only dead-lettered"},
		{"dlq redrive runs and pipeline", []string{"dlq", "redrive", bad, "--pipeline", "demo"}, 2, "not both"},
		{"dlq redrive unknown pipeline", []string{"dlq", "redrive", "--pipeline", "dmo"}, 2, "did you mean demo?"},

		{"replay unknown run", []string{"replay", "zzzzzzzzzzzz"}, 2, "no run"},
		{"replay from unknown step", []string{"replay", ok, "--from", "nosuch"}, 2, "no such step"},
		{"replay bad llm mode", []string{"replay", ok, "--llm", "maybe"}, 2, "recorded or live"},
		{"replay of a paused run", []string{"replay", rev}, 3, "needs_review"},
		{"replay", []string{"replay", ok}, 0, "succeeded"},

		{"stats", []string{"stats"}, 0, "demo"},
		{"stats bad window", []string{"stats", "--since", "-1h"}, 2, "--since"},
		{"stats unknown pipeline", []string{"stats", "--pipeline", "deme"}, 2, "did you mean demo?"},

		{"test missing path", []string{"test", "nosuch"}, 2, "nosuch"},
		{"worker bad concurrency", []string{"worker", "--concurrency", "0"}, 2, "--concurrency"},
		{"serve without tokens", []string{"serve", "--pipelines", c.dir}, 2, "server.tokens"},
		{"token create without name", []string{"token", "create"}, 2, "accepts 1 arg"},
		{"token create bad role", []string{"token", "create", "ci", "--role", "god"}, 2, "role"},
		{"help", []string{"help", "runs"}, 0, "Usage"},
		{"init", []string{"init", "fresh", "--dir", filepath.Join(c.dir, "fresh")}, 0, "wrote"},
		{"init over an existing pipeline", []string{"init", "fresh", "--dir", filepath.Join(c.dir, "fresh")}, 4, "exists"},
		{"init bad name", []string{"init", "Fresh"}, 2, "pipeline name"},
		{"completion", []string{"completion", "bash"}, 0, "bash completion"},
	}
	// The three runs were created within a few milliseconds: their ids share the time
	// characters, which is an ambiguous prefix when it is long enough to be looked up at all.
	common := ok
	for !strings.HasPrefix(rev, common) || !strings.HasPrefix(bad, common) {
		common = common[:len(common)-1]
	}
	if len(common) >= 8 {
		cases = append(cases, exitCase{"runs show ambiguous prefix", []string{"runs", "show", common}, 2, "ambiguous"})
	} else {
		t.Logf("the runs share only %q: no ambiguous prefix case this time", common)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := c.exec(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("pipectl %s: exit %d, want %d and %q in:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
			}
		})
	}

	// Every command of the tree has a row.
	covered := map[string]bool{}
	root := (&app{red: domain.NewRedactor(nil)}).rootCommand()
	for _, tc := range cases {
		cmd, _, err := root.Find(tc.args)
		if err == nil {
			covered[cmd.CommandPath()] = true
		}
	}
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		if cmd.Runnable() && !covered[cmd.CommandPath()] && !strings.HasPrefix(cmd.CommandPath(), "pipectl completion ") && cmd.Name() != "help" {
			t.Errorf("%s has no row in the exit code table", cmd.CommandPath())
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
