package llm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

func TestOpenAIWireFormat(t *testing.T) {
	srv := llmtest.New()
	defer srv.Close()
	srv.Push(llmtest.Answer(`{"team": "billing"}`))
	p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"})
	zero := 0.0
	resp, err := p.Complete(context.Background(), llm.Request{Model: "m", Temperature: &zero, MaxTokens: 50,
		Messages: []llm.Message{{Role: "user", Content: "hi"}}, Schema: []byte(`{"type":"object"}`), SchemaName: "out", Strict: true})
	if err != nil || resp.Content != `{"team": "billing"}` || resp.PromptTokens != 120 || resp.FinishReason != "stop" {
		t.Fatalf("%+v %v", resp, err)
	}
	req := srv.Requests()[0]
	if temp, ok := req["temperature"]; !ok || temp != 0.0 {
		t.Fatalf("a temperature of 0 must be sent, got %v (present %v)", temp, ok)
	}
	rf := req["response_format"].(map[string]any)
	if rf["type"] != "json_schema" || rf["json_schema"].(map[string]any)["strict"] != true {
		t.Fatalf("response_format %v", rf)
	}
}

func TestOpenAIErrorClasses(t *testing.T) {
	tests := []struct {
		name       string
		reply      llmtest.Reply
		transient  bool
		retryAfter time.Duration
	}{
		{"rate limited", llmtest.Reply{Status: 429, ErrorType: "requests", ErrorCode: "rate_limit_exceeded", RetryAfter: "2"}, true, 2 * time.Second},
		{"quota", llmtest.Reply{Status: 429, ErrorType: "insufficient_quota", ErrorCode: "insufficient_quota"}, false, 0},
		{"server error", llmtest.Reply{Status: 503, ErrorType: "server_error"}, true, 0},
		{"unauthorized", llmtest.Reply{Status: 401, ErrorType: "invalid_request_error", ErrorCode: "invalid_api_key"}, false, 0},
		{"bad request", llmtest.Reply{Status: 400, ErrorType: "invalid_request_error"}, false, 0},
		{"not found", llmtest.Reply{Status: 404, ErrorType: "invalid_request_error", ErrorCode: "model_not_found"}, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := llmtest.New()
			defer srv.Close()
			srv.Push(tc.reply)
			p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"})
			_, err := p.Complete(context.Background(), llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
			var pe *llm.Error
			if !errors.As(err, &pe) || pe.Transient != tc.transient || pe.StatusCode != tc.reply.Status || llm.RetryAfter(err) != tc.retryAfter {
				t.Fatalf("err %v (%+v)", err, pe)
			}
		})
	}
}

func TestOpenAITimeoutAndRefusedConnection(t *testing.T) {
	srv := llmtest.New()
	srv.Push(llmtest.Reply{Delay: time.Second, Content: "{}"})
	p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k", Timeout: 100 * time.Millisecond})
	_, err := p.Complete(context.Background(), llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	if !llm.IsTransient(err) {
		t.Fatalf("timeout must be transient: %v", err)
	}
	srv.Close()
	_, err = p.Complete(context.Background(), llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	if !llm.IsTransient(err) {
		t.Fatalf("refused connection must be transient: %v", err)
	}
}

func TestStrictIssues(t *testing.T) {
	ok := map[string]any{"type": "object", "additionalProperties": false, "required": []any{"a"},
		"properties": map[string]any{"a": map[string]any{"type": "string", "pattern": "^x$"}}}
	if issues := llm.StrictIssues(ok); len(issues) != 0 {
		t.Fatalf("strict-compatible schema flagged: %v", issues)
	}
	bad := map[string]any{"type": "object", "required": []any{"a"},
		"properties": map[string]any{"a": map[string]any{"type": "string", "maxLength": 5.0}, "b": map[string]any{"type": "integer"}}}
	issues := llm.StrictIssues(bad)
	want := []string{"/: needs additionalProperties: false", "/: optional properties (b); strict mode needs every property in required (use a null type for optional values)", "/properties/a: keyword maxLength is not supported"}
	if len(issues) != len(want) {
		t.Fatalf("issues %v", issues)
	}
	for i := range want {
		if issues[i] != want[i] {
			t.Fatalf("issue %d: %q, want %q", i, issues[i], want[i])
		}
	}
}
