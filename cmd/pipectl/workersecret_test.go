package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

const hostileTransformSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: hostile-pure
inputs: {type: object, required: [id, text], properties: {id: {type: string}, text: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: first, type: transform, output: {text: "${{ inputs.text }}"}}
  - {id: second, type: transform, needs: [first], output: {again: "${{ steps.first.output.text }}"}}
`

// TestWorkerOnPostgresKeepsHostileTextAsData attacks the worker's path on PostgreSQL through the
// real binary: a group commit now writes many runs' attempts as arrays in one statement, and a
// claim limited to some pipelines goes by the simple protocol. Inputs carrying SQL, quotes,
// CRLF, ../, a leading -, markup and array syntax must come back from the ledger exactly as
// given, every run intact; and a run dead-lettered by a child that prints its secret must leave
// no piece of the secret in the worker's log (the run's end line carries the error).
func TestWorkerOnPostgresKeepsHostileTextAsData(t *testing.T) {
	dsn := postgresDSN(t)
	c := newCLI(t, "")
	for name, body := range map[string]string{"pure.yaml": hostileTransformSpec, "exec.yaml": leakyExecSpec, "leak.sh": leakScript} {
		if err := os.WriteFile(filepath.Join(c.dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostile := []string{
		`'); DELETE FROM runs; --`, `\'); DELETE FROM step_attempts; --`, "line\r\nX-Injected: 1", "../../etc/passwd",
		"-rf /", `<script>alert("x")</script>`, `{"a","b"}`, `NULL`, "", "é ✓ \u2028",
	}
	var inputs []string
	for i, h := range hostile {
		in, _ := json.Marshal(map[string]string{"id": "h" + string(rune('a'+i)), "text": h})
		inputs = append(inputs, string(in))
	}
	submitAll(t, dsn, filepath.Join(c.dir, "pure.yaml"), inputs)
	submitAll(t, dsn, filepath.Join(c.dir, "exec.yaml"), []string{`{"id": "e1"}`})
	t.Setenv("LEAK_TOKEN", leakToken)
	// Limited to both pipelines: the claim goes by the simple protocol.
	w := startWorker(t, c.dir, dsn, "--pipelines", "hostile-pure,leaky-exec")
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	counts := waitForStates(t, store, len(hostile)+1, 30*time.Second, nil)
	w.cmd.Process.Signal(syscall.SIGTERM)
	w.cmd.Wait()
	if counts[domain.StateSucceeded] != len(hostile) || counts[domain.StateFailedPermanent] != 1 {
		t.Fatalf("runs ended %v, want %d succeeded and the exec one dead-lettered\n%s", counts, len(hostile), w.log)
	}
	runs, err := store.ListRuns(context.Background(), ledger.RunFilter{Pipeline: "hostile-pure"})
	if err != nil || len(runs) != len(hostile) {
		t.Fatalf("%d runs of hostile-pure (%v)", len(runs), err)
	}
	for _, r := range runs {
		var in struct{ Text string }
		json.Unmarshal(r.Input, &in)
		atts, err := store.Attempts(context.Background(), r.ID)
		if err != nil || len(atts) != 2 {
			t.Fatalf("run %s: %d attempts (%v)", r.ID, len(atts), err)
		}
		for i, key := range []string{"text", "again"} {
			var out map[string]string
			if err := json.Unmarshal(atts[i].Output, &out); err != nil || out[key] != in.Text || atts[i].StepID != []string{"first", "second"}[i] {
				t.Fatalf("run %s step %s: output %s, want %s = %q (%v)", r.ID, atts[i].StepID, atts[i].Output, key, in.Text, err)
			}
		}
	}
	log := w.log.String()
	if !strings.Contains(log, `"msg":"run finished"`) || !strings.Contains(log, "exit status 3") {
		t.Fatalf("the worker's log lacks the dead-lettered run's end line, so the check proves nothing:\n%s", log)
	}
	if form, ok := leakedForm(log, leakToken); ok {
		t.Fatalf("the worker's log gives the secret away as %q", form)
	}
}
