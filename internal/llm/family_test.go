package llm_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

func TestFamilyLookup(t *testing.T) {
	overrides := map[string]string{
		"corp-reasoner":  llm.FamilyReasoning, // a gateway's name for a reasoning model
		"gpt-5-chat*":    llm.FamilyChat,      // a longer prefix beats the built-in gpt-5*
		"azure/deploy-*": llm.FamilyReasoning,
	}
	f, err := llm.NewFamilies(overrides)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model, want string
	}{
		{"gpt-4o-mini", llm.FamilyChat},
		{"o1", llm.FamilyReasoning},
		{"o3-mini", llm.FamilyReasoning},
		{"o4-mini-2025-04-16", llm.FamilyReasoning},
		{"gpt-5", llm.FamilyReasoning},
		{"gpt-5.1-mini", llm.FamilyReasoning},
		{"openai/o3-mini", llm.FamilyReasoning}, // gateway prefix: the name after the slash
		{"llama3.1:8b", llm.FamilyChat},
		{"", llm.FamilyChat},
		{"/", llm.FamilyChat},
		{"corp-reasoner", llm.FamilyReasoning},
		{"corp-reasoner-2", llm.FamilyChat}, // exact names match exactly
		{"gpt-5-chat-latest", llm.FamilyChat},
		{"azure/deploy-7", llm.FamilyReasoning},
		{"O3-MINI", llm.FamilyChat}, // names are case-sensitive, like the API's
	}
	for _, tc := range tests {
		if got := f.Lookup(tc.model).Name; got != tc.want {
			t.Errorf("%q: family %s, want %s", tc.model, got, tc.want)
		}
	}
	if llm.DefaultFamilies().Lookup("gpt-5-chat-latest").Name != llm.FamilyReasoning {
		t.Error("the override leaked into the built-in table")
	}
	var none *llm.Families
	if none.Lookup("o3").Name != llm.FamilyReasoning {
		t.Error("a nil table must mean the built-in one")
	}
}

func TestFamilyOverridesRefused(t *testing.T) {
	tests := map[string]map[string]string{
		"unknown family":   {"m": "thinking"},
		"empty pattern":    {"": "chat"},
		"star in the body": {"gpt-*-mini": "chat"},
		"lone star twice":  {"**": "chat"},
	}
	for name, overrides := range tests {
		if _, err := llm.NewFamilies(overrides); err == nil {
			t.Errorf("%s: %v accepted", name, overrides)
		}
	}
	if _, err := llm.NewFamilies(map[string]string{"*": llm.FamilyReasoning}); err != nil {
		t.Errorf("a catch-all prefix is legal: %v", err)
	}
}

func TestReasoningWireFormat(t *testing.T) {
	tests := []struct {
		name        string
		model       string
		families    map[string]string
		wantFields  map[string]any
		absentField []string
	}{
		{"reasoning model", "o3-mini", nil,
			map[string]any{"max_completion_tokens": 300.0, "reasoning_effort": "low"}, []string{"max_tokens", "temperature", "top_p"}},
		{"chat model", "gpt-4o-mini", nil,
			map[string]any{"max_tokens": 300.0, "temperature": 0.0}, []string{"max_completion_tokens", "reasoning_effort"}},
		// go-openai refuses max_tokens for any name starting with gpt-5; the family a
		// configuration gives must win over that guess.
		{"configured chat model with a reasoning-like name", "gpt-5-chat-latest", map[string]string{"gpt-5-chat*": "chat"},
			map[string]any{"max_tokens": 300.0, "temperature": 0.0}, []string{"max_completion_tokens", "reasoning_effort"}},
		{"configured reasoning model behind a gateway name", "corp-reasoner", map[string]string{"corp-reasoner": "reasoning"},
			map[string]any{"max_completion_tokens": 300.0, "reasoning_effort": "low"}, []string{"max_tokens", "temperature"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := llmtest.New()
			defer srv.Close()
			srv.ReasoningModels("o3-mini", "corp-reasoner")
			srv.Push(llmtest.Reply{Content: `{}`, FinishReason: "stop", PromptTokens: 10, CompletionTokens: 90, ReasoningTokens: 64,
				Model: tc.model + "-2025-01-31", ProcessingMS: "1234"})
			fams, err := llm.NewFamilies(tc.families)
			if err != nil {
				t.Fatal(err)
			}
			p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k", UserAgent: "pipectl/v9.9.9", Families: fams})
			zero := 0.0
			resp, err := p.Complete(context.Background(), llm.Request{Model: tc.model, Temperature: &zero, MaxTokens: 300, ReasoningEffort: "low",
				ClientRequestID: "pipectl-abc-1-0", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
			if err != nil {
				t.Fatalf("%v (sent %v)", err, srv.Requests())
			}
			body := srv.Requests()[0]
			for k, v := range tc.wantFields {
				if body[k] != v {
					t.Errorf("%s = %v, want %v", k, body[k], v)
				}
			}
			for _, k := range tc.absentField {
				if _, ok := body[k]; ok {
					t.Errorf("%s sent: %v", k, body[k])
				}
			}
			h := srv.Headers()[0]
			if h.Get("User-Agent") != "pipectl/v9.9.9" || h.Get("X-Client-Request-Id") != "pipectl-abc-1-0" {
				t.Errorf("headers %v", h)
			}
			if resp.RequestID != "req_test_1" || resp.ProcessingMS == nil || *resp.ProcessingMS != 1234 ||
				resp.ReasoningTokens == nil || *resp.ReasoningTokens != 64 || resp.Model != tc.model+"-2025-01-31" {
				t.Errorf("response %+v", resp)
			}
		})
	}
}

func TestProviderHeadersOnErrorsAndHostileValues(t *testing.T) {
	srv := llmtest.New()
	defer srv.Close()
	srv.Push(
		llmtest.Reply{Status: 503, ErrorType: "server_error", RequestID: "req_failed_1", ProcessingMS: "12"},
		llmtest.Reply{Content: `{}`, FinishReason: "stop", RequestID: "req_\t\u202eder" + strings.Repeat("x", 500), ProcessingMS: "NaN",
			Model: "m\x1b]0;pwned\x07"},
	)
	p := llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"})
	resp, err := p.Complete(context.Background(), llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	if !llm.IsTransient(err) || resp.RequestID != "req_failed_1" || resp.ProcessingMS == nil || *resp.ProcessingMS != 12 || resp.Family != llm.FamilyChat {
		t.Fatalf("a failed call must keep the provider's request id: %+v %v", resp, err)
	}
	if ua := srv.Headers()[0].Get("User-Agent"); ua != "pipectl" {
		t.Fatalf("default User-Agent %q", ua)
	}
	resp, err = p.Complete(context.Background(), llm.Request{Model: "m", Messages: []llm.Message{{Role: "user", Content: "hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(resp.RequestID+resp.Model, "\x1b\x07\t\u202e") || len(resp.RequestID) > 200 || resp.ProcessingMS != nil {
		t.Fatalf("hostile headers reached the response: %q %q %v", resp.RequestID, resp.Model, resp.ProcessingMS)
	}
	if _, ok := srv.Headers()[1]["X-Client-Request-Id"]; ok {
		t.Fatal("no client request id was asked for, none may be sent")
	}
}

func FuzzFamilies(f *testing.F) {
	f.Add("corp-*", "reasoning", "corp-x/o3")
	f.Add("*", "chat", "")
	f.Add("a*b", "chat", "ab")
	f.Fuzz(func(t *testing.T, pattern, family, model string) {
		fams, err := llm.NewFamilies(map[string]string{pattern: family})
		if err != nil {
			return
		}
		got := fams.Lookup(model)
		if got.Name != llm.FamilyChat && got.Name != llm.FamilyReasoning {
			t.Fatalf("family %q", got.Name)
		}
		if pattern == model && got.Name != family {
			t.Fatalf("an exact override must win: %q -> %s, want %s", model, got.Name, family)
		}
	})
}

// TestReplayedAnswerHasNoProviderTrace records a call to a reasoning model and replays it: the
// answer, its model and its reasoning tokens come back, but no request id or processing time,
// since the replayed call never reached a provider; and the client request id is no part of
// the key, so a replay under other attempt numbers still finds its answers.
func TestReplayedAnswerHasNoProviderTrace(t *testing.T) {
	srv := llmtest.New()
	defer srv.Close()
	srv.Push(llmtest.Reply{Content: `{"a": 1}`, FinishReason: "stop", ReasoningTokens: 10, CompletionTokens: 20, Model: "o3-mini-2025-01-31", ProcessingMS: "9"})
	path := t.TempDir() + "/rec.json"
	rec := llm.NewRecorder(path)
	p := rec.Wrap(llm.NewOpenAI(llm.Config{BaseURL: srv.BaseURL(), APIKey: "k"}))
	req := llm.Request{Step: "s", Model: "o3-mini", MaxTokens: 100, ReasoningEffort: "high", Messages: []llm.Message{{Role: "user", Content: "hi"}}, ClientRequestID: "pipectl-k-r-1-0"}
	live, err := p.Complete(context.Background(), req)
	if err != nil || live.RequestID == "" || live.ProcessingMS == nil {
		t.Fatalf("%+v %v", live, err)
	}
	replayer, err := llm.LoadReplayer(path)
	if err != nil {
		t.Fatal(err)
	}
	req.ClientRequestID = "pipectl-k-r2-1-0"
	got, err := replayer.Complete(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got.Content != `{"a": 1}` || got.Model != "o3-mini-2025-01-31" || got.ReasoningTokens == nil || *got.ReasoningTokens != 10 ||
		got.RequestID != "" || got.ProcessingMS != nil || got.Family != "" {
		t.Fatalf("replayed %+v", got)
	}
	req.ReasoningEffort = "low"
	if _, err := replayer.Complete(context.Background(), req); !errors.Is(err, llm.ErrNotRecorded) {
		t.Fatalf("reasoning_effort must be part of the key: %v", err)
	}
}
