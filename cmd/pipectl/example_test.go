package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// TestWeeklyReportExample runs the README's example pipeline end to end: the report lands in
// the outbox; a second run with a fresh ledger finds it there and the guard writes nothing.
func TestWeeklyReportExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "pipelines/weekly-report.yaml") {
		t.Fatal("the README no longer mentions the weekly-report example")
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

var updateRecording = flag.Bool("update-recording", false, "regenerate pipelines/testdata/invoice-extraction.llm.json from a scripted model server")

const invoiceRecording = "../../pipelines/testdata/invoice-extraction.llm.json"

// TestInvoiceExampleFromRecording runs the README's first command: the invoice example
// answered from its recording, with no API key and no network, writing into the outbox; a
// second run is a duplicate and writes nothing.
func TestInvoiceExampleFromRecording(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const first = "go run ./cmd/pipectl run pipelines/invoice-extraction.yaml --input pipelines/testdata/invoice-extraction.input.json --llm-replay pipelines/testdata/invoice-extraction.llm.json"
	lines := strings.SplitN(string(readme), "\n```sh\n", 2)
	if len(lines) != 2 || !strings.HasPrefix(lines[1], first+"\n") {
		t.Fatal("the README's first command is not the one this test exercises")
	}
	raw, err := os.ReadFile("../../pipelines/testdata/invoice-extraction.input.json")
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
	spec, _ := filepath.Abs("../../pipelines/invoice-extraction.yaml")
	recording, _ := filepath.Abs(invoiceRecording)
	c := newCLI(t, "")

	if *updateRecording {
		model := llmtest.New()
		defer model.Close()
		model.Push(llmtest.Answer(`{"vendor": "ACME Office Supplies GmbH", "invoice_number": "AC-2026/1187", "issue_date": "2026-11-20", "currency": "EUR", "subtotal": 635.00, "tax": 120.65, "total": 755.65, "line_items": [{"description": "2 x Ergonomic chair", "amount": 540.00}, {"description": "5 x Desk lamp", "amount": 95.00}]}`))
		cmd := c.command("run", spec, "--input", string(inputJSON), "--llm-record", recording)
		cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("recording: %v\n%s", err, out)
		}
		t.Log("rewrote", invoiceRecording)
		return
	}
	cmd := c.command("run", spec, "--input", string(inputJSON), "--llm-replay", recording)
	cmd.Env = append(os.Environ(), "OPENAI_API_KEY=", "OPENAI_BASE_URL=http://127.0.0.1:9/unreachable")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	record, err := os.ReadFile(filepath.Join(outbox, "INV-20017.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(record, &got); err != nil || got["total"] != 755.65 || got["number"] != "AC-2026/1187" || got["lines"] != 2.0 {
		t.Fatalf("outbox record %s (%v)", record, err)
	}
	out, err := c.command("run", spec, "--input", string(inputJSON), "--llm-replay", recording).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "duplicate: run") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	doc := showRun(t, c)
	if doc.Run.State != "succeeded" || len(doc.ModelCalls) != 1 || doc.ModelCalls[0].Verdict != "pass" {
		t.Fatalf("run %+v", doc)
	}
}
