package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// reasoningSpec asks a reasoning model with the settings a chat model would take: go-openai
// refuses max_tokens and temperature 0.7 for o3-mini before sending anything, and OpenAI
// refuses them on the wire.
const reasoningSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: reasoning
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 50ms}
steps:
  - id: classify
    type: llm
    model: o3-mini
    temperature: 0.7
    max_tokens: 500
    reasoning_effort: low
    prompt: "Classify ticket ${{ inputs.id }}"
    output:
      schema:
        type: object
        additionalProperties: false
        required: [team]
        properties: {team: {enum: [billing, technical]}}
`

type tracedShow struct {
	Attempts []struct {
		Step    string
		Attempt int
		StepKey string `json:"step_key"`
		Outcome string
	}
	ModelCalls []struct {
		Attempt         int
		Reask           int
		Outcome         string
		Family          string
		ClientRequestID string `json:"client_request_id"`
		RequestID       string `json:"request_id"`
		ResponseModel   string `json:"response_model"`
		ProcessingMS    *int64 `json:"processing_ms"`
		ReasoningTokens *int   `json:"reasoning_tokens"`
	} `json:"model_calls"`
}

// TestReasoningModelThroughCLI runs an o3-mini step through the CLI against a server that
// refuses what OpenAI refuses for reasoning models. The first call fails with a 503 (the engine
// retries: attempt 2), the second answer is rejected by the gate (a re-ask), the third passes.
// Every request must carry max_completion_tokens, no max_tokens or temperature, pipectl's
// User-Agent and a client request id of step key, attempt and re-ask; the ledger and runs show
// must carry the provider's request ids, processing times, answering model and reasoning tokens.
func TestReasoningModelThroughCLI(t *testing.T) {
	ledgers := map[string]string{"sqlite": ""}
	if os.Getenv("PIPECTL_TEST_POSTGRES") != "" {
		ledgers["postgres"] = postgresDSN(t)
	}
	for name, dsn := range ledgers {
		t.Run(name, func(t *testing.T) {
			model := llmtest.New()
			defer model.Close()
			model.ReasoningModels("o3-mini")
			model.Push(
				llmtest.Reply{Status: 503, ErrorType: "server_error", RequestID: "req_overloaded", ProcessingMS: "5"},
				llmtest.Reply{Content: `{"team": "sales"}`, FinishReason: "stop", PromptTokens: 50, CompletionTokens: 300, ReasoningTokens: 256,
					Model: "o3-mini-2025-01-31", RequestID: "req_rejected", ProcessingMS: "812"},
				llmtest.Reply{Content: `{"team": "billing"}`, FinishReason: "stop", PromptTokens: 80, CompletionTokens: 200, ReasoningTokens: 192,
					Model: "o3-mini-2025-01-31", RequestID: "req_accepted", ProcessingMS: "640.5"},
			)
			c := newCLI(t, reasoningSpec)
			if dsn != "" {
				c.ledger = dsn
			}
			if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "T-9"}`); code != 0 {
				t.Fatalf("exit %d\n%s", code, out)
			}
			reqs, headers := model.Requests(), model.Headers()
			if len(reqs) != 3 {
				t.Fatalf("%d requests", len(reqs))
			}
			_, ver, _ := pipectl(t, "version")
			wantUA := "pipectl/" + strings.TrimPrefix(strings.TrimSpace(ver), "pipectl ")
			for i, body := range reqs {
				if body["max_completion_tokens"] != 500.0 || body["reasoning_effort"] != "low" {
					t.Errorf("request %d: max_completion_tokens %v, reasoning_effort %v", i, body["max_completion_tokens"], body["reasoning_effort"])
				}
				for _, k := range []string{"max_tokens", "temperature", "top_p"} {
					if v, ok := body[k]; ok {
						t.Errorf("request %d carries %s: %v", i, k, v)
					}
				}
				if ua := headers[i].Get("User-Agent"); ua != wantUA {
					t.Errorf("request %d: User-Agent %q, want %q", i, ua, wantUA)
				}
			}

			runs := c.runsJSON()
			id := runs[0]["id"].(string)
			raw, err := c.command("runs", "show", id, "--format", "json").Output()
			if err != nil {
				t.Fatal(err)
			}
			var doc tracedShow
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			stepKey := doc.Attempts[0].StepKey
			if stepKey == "" || len(doc.Attempts) != 2 || doc.Attempts[1].StepKey != stepKey {
				t.Fatalf("attempts %+v", doc.Attempts)
			}
			// The engine's retry is attempt 2; the re-ask is re-ask 1 of attempt 2.
			prefix := "pipectl-" + stepKey + "-" + id
			wantIDs := []string{prefix + "-1-0", prefix + "-2-0", prefix + "-2-1"}
			for i, want := range wantIDs {
				if got := headers[i].Get("X-Client-Request-Id"); got != want {
					t.Errorf("request %d: X-Client-Request-Id %q, want %q", i, got, want)
				}
			}
			type want struct {
				outcome, requestID, model string
				processing                int64
				reasoning                 int
			}
			wants := []want{{"error", "req_overloaded", "", 5, -1}, {"rejected", "req_rejected", "o3-mini-2025-01-31", 812, 256}, {"accepted", "req_accepted", "o3-mini-2025-01-31", 640, 192}}
			if len(doc.ModelCalls) != len(wants) {
				t.Fatalf("%d model calls: %+v", len(doc.ModelCalls), doc.ModelCalls)
			}
			for i, w := range wants {
				mc := doc.ModelCalls[i]
				if mc.Outcome != w.outcome || mc.RequestID != w.requestID || mc.ResponseModel != w.model || mc.Family != "reasoning" ||
					mc.ClientRequestID != wantIDs[i] || mc.ProcessingMS == nil || *mc.ProcessingMS != w.processing {
					t.Errorf("model call %d: %+v", i, mc)
				}
				if (w.reasoning < 0) != (mc.ReasoningTokens == nil) || mc.ReasoningTokens != nil && *mc.ReasoningTokens != w.reasoning {
					t.Errorf("model call %d: reasoning tokens %v, want %d", i, mc.ReasoningTokens, w.reasoning)
				}
			}
			text, err := c.command("runs", "show", id).Output()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"request req_overloaded", "request req_accepted, provider 640ms", "o3-mini (answered by o3-mini-2025-01-31), 80+200 tokens (192 reasoning)"} {
				if !strings.Contains(string(text), s) {
					t.Errorf("runs show lacks %q:\n%s", s, text)
				}
			}
		})
	}
}

// TestModelFamilyFromConfig: a model outside the reasoning family gets max_tokens and its
// temperature, 0 included, and no reasoning_effort; a gateway name the configuration puts in
// the reasoning family gets max_completion_tokens, as the family says and not the name.
func TestModelFamilyFromConfig(t *testing.T) {
	spec := strings.NewReplacer("model: o3-mini", "model: corp-large", "temperature: 0.7", "temperature: 0").Replace(reasoningSpec)
	tests := []struct {
		name, config string
		present      map[string]any
		absent       []string
		warning      string // what run says about the spec, from the same families
	}{
		{"chat by default", "", map[string]any{"max_tokens": 500.0, "temperature": 0.0}, []string{"max_completion_tokens", "reasoning_effort"},
			`"corp-large" is in the chat family, which takes no reasoning_effort`},
		{"reasoning by configuration", "providers:\n  default:\n    model_families: {\"corp-*\": reasoning}\n",
			map[string]any{"max_completion_tokens": 500.0, "reasoning_effort": "low"}, []string{"max_tokens", "temperature"},
			`"corp-large" is in the reasoning family, which refuses any temperature but the default 1: 0 is left out`},
		// provider: default is the same provider as none: OPENAI_BASE_URL and the families.
		{"provider: default", "providers:\n  default:\n    model_families: {\"corp-*\": reasoning}\n",
			map[string]any{"max_completion_tokens": 500.0, "reasoning_effort": "low"}, []string{"max_tokens", "temperature"},
			`"corp-large" is in the reasoning family, which refuses any temperature but the default 1: 0 is left out`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model := llmtest.New()
			defer model.Close()
			model.Push(llmtest.Answer(`{"team": "billing"}`))
			spec := spec
			if tc.name == "provider: default" {
				spec = strings.Replace(spec, "    model: corp-large\n", "    model: corp-large\n    provider: default\n", 1)
			}
			c := newCLI(t, spec)
			if tc.config != "" {
				writeFile(t, c.dir, "pipectl.yaml", tc.config)
			}
			code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "C-1"}`)
			if code != 0 || !strings.Contains(out, tc.warning) || strings.Count(out, "warning:") != 1 {
				t.Fatalf("exit %d, want 0 and one warning %q\n%s", code, tc.warning, out)
			}
			body := model.Requests()[0]
			for k, v := range tc.present {
				if body[k] != v {
					t.Errorf("%s = %v, want %v", k, body[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := body[k]; ok {
					t.Errorf("%s sent: %v", k, v)
				}
			}
		})
	}
}

// TestClientRequestIDStableWhenAnAttemptIsSentAgain kills pipectl while the model is still
// thinking. A model call has no side effect, so nothing of the attempt was written; the next
// run takes the run over and sends attempt 1 again. The provider must see the same client
// request id both times, so its logs show one attempt sent twice, not two calls.
func TestClientRequestIDStableWhenAnAttemptIsSentAgain(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Reply{Content: `{"team": "billing"}`, FinishReason: "stop", Delay: time.Minute}, llmtest.Answer(`{"team": "billing"}`))
	c := newCLI(t, reasoningSpec)
	cmd := c.command("run", c.spec, "--input", `{"id": "K-1"}`)
	cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(model.Requests()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if len(model.Requests()) != 1 {
		t.Fatalf("the model got %d requests before the kill", len(model.Requests()))
	}
	if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "K-1"}`); code != 0 {
		t.Fatalf("the second run: exit %d\n%s", code, out)
	}
	h := model.Headers()
	if len(h) != 2 {
		t.Fatalf("%d requests", len(h))
	}
	first, second := h[0].Get("X-Client-Request-Id"), h[1].Get("X-Client-Request-Id")
	if first == "" || first != second || !strings.HasSuffix(first, "-1-0") {
		t.Fatalf("client request ids %q and %q: one attempt sent twice must carry one id", first, second)
	}
}

// TestValidateWarnsAboutModelFamilies runs validate through the CLI: a temperature the
// reasoning family refuses is a warning in every format, with file, line and column, and the
// exit code stays 0; pipectl.yaml moves a gateway's model into the reasoning family; a bad
// model_families entry is a usage error naming the key.
func TestValidateWarnsAboutModelFamilies(t *testing.T) {
	dir := t.TempDir()
	spec := writeFile(t, dir, "reasoning.yaml", reasoningSpec)
	c := &cli{t: t, dir: dir, ledger: "sqlite:" + filepath.Join(dir, "ledger.db"), spec: spec}
	const msg = `model "o3-mini" is in the reasoning family, which refuses any temperature but the default 1: 0.7 is left out of the request`
	formats := map[string][]string{
		"text":   {spec + ":12:18: warning: steps[0].temperature: " + msg},
		"github": {"::warning file=" + spec + ",line=12,", msg},
		"json":   {`"severity": "warning"`, `"valid": true`},
		"sarif":  {`"level": "warning"`, "refuses any temperature"},
	}
	for format, wants := range formats {
		code, out := c.exec(t, nil, "validate", "--format", format, spec)
		for _, want := range wants {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("%s: exit %d, want 0 and %q in:\n%s", format, code, want, out)
			}
		}
	}
	gateway := writeFile(t, dir, "gateway.yaml", strings.Replace(reasoningSpec, "model: o3-mini", "model: corp-large", 1))
	code, out := c.exec(t, nil, "validate", gateway)
	if code != 0 || strings.Contains(out, "temperature") || !strings.Contains(out, `"corp-large" is in the chat family, which takes no reasoning_effort`) {
		t.Fatalf("without configuration corp-large is a chat model: exit %d\n%s", code, out)
	}
	writeFile(t, dir, "pipectl.yaml", "providers:\n  default:\n    model_families:\n      corp-*: reasoning\n")
	code, out = c.exec(t, nil, "validate", gateway)
	if code != 0 || strings.Contains(out, "reasoning_effort") || !strings.Contains(out, `"corp-large" is in the reasoning family, which refuses any temperature`) {
		t.Fatalf("with configuration corp-large is a reasoning model: exit %d\n%s", code, out)
	}
	writeFile(t, dir, "pipectl.yaml", "providers:\n  default:\n    model_families:\n      corp-*: thinking\n")
	code, out = c.exec(t, nil, "validate", gateway)
	if code != 2 || !strings.Contains(out, `providers.default.model_families: model family "thinking" for "corp-*": unknown family`) {
		t.Fatalf("bad model_families: exit %d\n%s", code, out)
	}
}

// TestProviderTraceIsRedacted: a gateway that echoes the API key in its request id header or
// its model name (a misconfigured proxy, or a hostile one) must not put the key into the ledger.
func TestProviderTraceIsRedacted(t *testing.T) {
	const key = "sk-trace-7f3e9a1c5b"
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Reply{Content: `{"team": "billing"}`, FinishReason: "stop", RequestID: "req_" + key, Model: "o3-mini/" + key})
	c := newCLI(t, strings.Replace(reasoningSpec, "    temperature: 0.7\n", "", 1))
	cmd := c.command("run", c.spec, "--input", `{"id": "S-1"}`)
	cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY="+key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	id := c.runsJSON()[0]["id"].(string)
	for _, format := range []string{"json", "table"} {
		out, err := c.command("runs", "show", id, "--format", format).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if strings.Contains(string(out), key) || !strings.Contains(string(out), "req_***") {
			t.Fatalf("%s: the key reached runs show:\n%s", format, out)
		}
	}
}

// TestReasoningSpentTheLimit: a reasoning model that spends max_completion_tokens on reasoning
// answers nothing; the step fails as truncated and says where the tokens went.
func TestReasoningSpentTheLimit(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	model.Push(llmtest.Reply{Content: "", FinishReason: "length", PromptTokens: 40, CompletionTokens: 500, ReasoningTokens: 500})
	c := newCLI(t, reasoningSpec)
	code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "L-1"}`)
	if code != 1 || !strings.Contains(out, "cut off at max_tokens (500), 500 of the 500 completion tokens spent on reasoning") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}
