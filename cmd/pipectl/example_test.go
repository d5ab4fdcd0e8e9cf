package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWeeklyReportExample runs the README's example pipeline end to end: the report lands in
// the outbox; a second run with a fresh ledger finds it there and the guard writes nothing.
func TestWeeklyReportExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const first = "go run ./cmd/pipectl run pipelines/weekly-report.yaml --input pipelines/testdata/weekly-report.input.json"
	if !strings.Contains(string(readme), first) {
		t.Fatal("the README's first command is not the one this test exercises")
	}
	raw, err := os.ReadFile("../../pipelines/testdata/weekly-report.input.json")
	if err != nil {
		t.Fatal(err)
	}
	var input map[string]any
	if err := json.Unmarshal(raw, &input); err != nil {
		t.Fatal(err)
	}
	outbox := t.TempDir()
	input["outbox_dir"] = outbox
	inputJSON, _ := json.Marshal(input)
	spec, _ := filepath.Abs("../../pipelines/weekly-report.yaml")

	c := newCLI(t, "")
	out, err := c.command("run", spec, "--input", string(inputJSON)).CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	report, err := os.ReadFile(filepath.Join(outbox, "payments-2026-W48.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# payments: week 2026-W48", "1 features, 2 fixes, 1 chores.", "- **fix** Currency rounding for JPY invoices (PAY-820)"} {
		if !strings.Contains(string(report), want) {
			t.Fatalf("report lacks %q:\n%s", want, report)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(outbox, ".*"))
	if len(leftovers) > 0 {
		t.Fatalf("temporary files left in the outbox: %v", leftovers)
	}

	// A new ledger knows nothing of the first run; the guard still sees the report.
	c2 := newCLI(t, "")
	if out, err := c2.command("run", spec, "--input", string(inputJSON)).CombinedOutput(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	runs := c2.runsJSON()
	show, err := c2.command("runs", "show", runs[0]["id"].(string), "--format", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Steps []struct{ Step, Outcome string }
	}
	if err := json.Unmarshal(show, &doc); err != nil {
		t.Fatal(err)
	}
	last := doc.Steps[len(doc.Steps)-1]
	if last.Step != "publish" || last.Outcome != "guarded" {
		t.Fatalf("second publish: %+v", last)
	}
	again, _ := os.ReadFile(filepath.Join(outbox, "payments-2026-W48.md"))
	if string(again) != string(report) {
		t.Fatal("the guarded run rewrote the report")
	}
}
