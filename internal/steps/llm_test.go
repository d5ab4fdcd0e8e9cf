package steps

import (
	"context"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

func llmCall(t *testing.T, spec *domain.LLMStep) *domain.StepCall {
	t.Helper()
	step := &domain.Step{ID: "ask", Type: domain.StepLLM, LLM: spec}
	return &domain.StepCall{
		Step:   step,
		Vars:   map[string]any{"inputs": map[string]any{}},
		Render: func(v any) (any, error) { return v, nil },
	}
}

func TestTokenBudgetStopsBeforeTheNextCall(t *testing.T) {
	srv := llmtest.New()
	defer srv.Close()
	// Each answer costs 120 + 40 tokens and fails the schema.
	srv.Push(llmtest.Answer(`{"n": "x"}`), llmtest.Answer(`{"n": "y"}`), llmtest.Answer(`{"n": 1}`))
	p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"})
	spec := &domain.LLMStep{Model: "m", Prompt: "p", MaxTokens: 100, MaxTokensTotal: 300, MaxReasks: 5,
		OutputSchema: &domain.Schema{Location: "file:///tmp/s.json", Doc: map[string]any{
			"type": "object", "additionalProperties": false, "required": []any{"n"},
			"properties": map[string]any{"n": map[string]any{"type": "integer"}}}}}
	step := LLM{Provider: func(string) (llm.Provider, error) { return p, nil }, Gates: &Gates{}}
	res, err := step.Execute(context.Background(), llmCall(t, spec))
	// After one call 160 tokens are used; a second (up to 100 more completion tokens plus its
	// prompt) fits, and after it 320 exceed the budget of 300, so no third call is made.
	if err == nil || domain.ClassOf(err) != domain.ClassPermanent || !strings.Contains(err.Error(), "token budget: 320 of max_tokens_total 300") {
		t.Fatalf("err %v", err)
	}
	if len(res.Calls) != 2 || len(srv.Requests()) != 2 {
		t.Fatalf("calls %d, requests %d", len(res.Calls), len(srv.Requests()))
	}
}

func TestJSONModeWhenTheSchemaIsNotStrict(t *testing.T) {
	srv := llmtest.New()
	defer srv.Close()
	srv.Push(llmtest.Answer(`{"note": "ok"}`))
	p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"})
	spec := &domain.LLMStep{Model: "m", Prompt: "p", OutputSchema: &domain.Schema{Location: "file:///tmp/s2.json", Doc: map[string]any{
		"type": "object", "properties": map[string]any{"note": map[string]any{"type": "string", "maxLength": 10.0}}}}}
	step := LLM{Provider: func(string) (llm.Provider, error) { return p, nil }, Gates: &Gates{}}
	res, err := step.Execute(context.Background(), llmCall(t, spec))
	if err != nil || res.Outcome != domain.OutcomeSucceeded {
		t.Fatalf("%v %+v", err, res)
	}
	req := srv.Requests()[0]
	if rf := req["response_format"].(map[string]any); rf["type"] != "json_object" {
		t.Fatalf("response_format %v", rf)
	}
	system := req["messages"].([]any)[0].(map[string]any)["content"].(string)
	if !strings.Contains(system, `"maxLength":10`) {
		t.Fatalf("in JSON mode the schema must be in the system message: %s", system)
	}
}
