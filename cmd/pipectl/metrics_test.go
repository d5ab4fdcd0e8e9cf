package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// meteredSpec exercises every family of worker metrics: a model call that passes its gate, a
// gate step, and an approval that leaves the run paused in needs_review.
const meteredSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: metered
inputs: {type: object, properties: {id: {type: string, pattern: "^[A-Za-z0-9-]{1,40}$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: classify
    type: llm
    model: test-model
    prompt: "Classify ${{ inputs.id }}"
    output:
      schema:
        type: object
        additionalProperties: false
        required: [team]
        properties: {team: {enum: [billing, technical]}}
  - id: check
    type: gate
    input: ${{ steps.classify.output }}
    schema: {type: object, required: [team]}
  - id: sign_off
    type: approval
    message: Label ${{ inputs.id }} as ${{ steps.check.output.team }}?
`

// TestWorkerMetricsEndpoint runs a real worker process against a real SQLite ledger and a
// scripted OpenAI-compatible model server, then reads its metrics listener over HTTP.
func TestWorkerMetricsEndpoint(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Answer(`{"team": "billing"}`), llmtest.Answer(`{"team": "technical"}`))
	c := newCLI(t, meteredSpec)
	submitAll(t, c.ledger, c.spec, []string{`{"id": "m-1"}`, `{"id": "m-2"}`})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(binary, "--ledger", c.ledger, "worker", "--concurrency", "2", "--poll", "200ms", "--drain", "5s", "--metrics-addr", addr)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker did not drain cleanly: %v\n%s", err, log.String())
		}
	}()
	store, err := ledger.Open(context.Background(), c.ledger)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		runs, err := store.ListRuns(context.Background(), ledger.RunFilter{State: domain.StateNeedsReview})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runs did not reach needs_review\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	store.Close()

	// The paused-run gauge is sampled from the ledger about once a second.
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, b := get(t, "http://"+addr+"/metrics")
		body = b
		if code == 200 && strings.Contains(body, `pipectl_runs_paused{state="needs_review"} 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed the paused runs (HTTP %d):\n%s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{
		"go_goroutines ", "go_memstats_alloc_bytes ", "process_cpu_seconds_total ", "process_resident_memory_bytes ",
		`pipectl_build_info{goversion="go`,
		`pipectl_runs_paused{state="waiting_external"} 0`,
		`pipectl_runs_total{pipeline="metered",state="needs_review"} 2`,
		`pipectl_step_attempts_total{class="none",outcome="succeeded",pipeline="metered",step="classify"} 2`,
		`pipectl_step_duration_seconds_bucket{pipeline="metered",step="check",le="0.0001"}`,
		`pipectl_model_calls_total{model="test-model",outcome="accepted",provider="`,
		`pipectl_model_tokens_total{kind="completion",model="test-model",provider="`,
		`pipectl_model_call_duration_seconds_count{model="test-model",provider="`,
		`pipectl_gate_verdicts_total{pipeline="metered",step="classify",verdict="pass"} 2`,
		`pipectl_gate_verdicts_total{pipeline="metered",step="check",verdict="pass"} 2`,
		"pipectl_claim_duration_seconds_count ", "pipectl_queue_depth 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, `=""`) {
		t.Errorf("a metric has an empty label value:\n%s", grepLines(body, `=""`))
	}
	if t.Failed() {
		t.Fatalf("metrics:\n%s", body)
	}

	// Only /metrics and /healthz are served.
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok\n"},
		{"HEAD", "/metrics", 200, ""},
		{"GET", "/", 404, ""},
		{"GET", "/metrics/extra", 404, ""},
		{"GET", "/healthz/", 404, ""},
		{"GET", "/debug/pprof/", 404, ""},
		{"POST", "/metrics", 405, ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.body != "" && string(b) != tc.body) {
			t.Errorf("%s %s: HTTP %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, b, tc.code, tc.body)
		}
	}

	t.Run("promtool", func(t *testing.T) {
		promtool := os.Getenv("PIPECTL_PROMTOOL")
		if promtool == "" {
			promtool, err = exec.LookPath("promtool")
			if err != nil {
				t.Skip("promtool not found (Debian package prometheus; .ci/run extracts it, or set PIPECTL_PROMTOOL): the exposition is not linted")
			}
		}
		file := filepath.Join(t.TempDir(), "metrics.txt")
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		in, _ := os.Open(file)
		defer in.Close()
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = in
		if out, err := check.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(out)
}
