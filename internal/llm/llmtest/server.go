// Package llmtest runs a scripted OpenAI-compatible chat completions server over loopback, for tests that drive the real client.
package llmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Reply is one scripted answer: a completion, or an error status.
type Reply struct {
	// Status, when not 200, makes the reply an API error with ErrorType and ErrorCode.
	Status     int
	ErrorType  string
	ErrorCode  string
	RetryAfter string

	Content          string
	Refusal          string
	FinishReason     string
	PromptTokens     int
	CompletionTokens int
	// ReasoningTokens, when not 0, is reported in usage.completion_tokens_details.
	ReasoningTokens int
	// Model is the model the answer names; empty means the one requested.
	Model string
	// RequestID and ProcessingMS are sent as x-request-id and openai-processing-ms, on errors
	// too; an empty RequestID means a generated one (req_test_N), "-" means none.
	RequestID    string
	ProcessingMS string
	Delay        time.Duration
	// Flood, when positive, makes the content that many bytes of 'a', streamed without being
	// held in memory: a hostile or broken server.
	Flood int64
}

// Server is a chat completions endpoint that answers from a script, in order, and keeps every
// request it received. Its base URL for clients is URL + "/v1".
type Server struct {
	*httptest.Server
	mu        sync.Mutex
	script    []Reply
	requests  []map[string]any
	headers   []http.Header
	reasoning map[string]bool
}

// New starts a server; close it with Close.
func New() *Server {
	s := &Server{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// BaseURL is what OPENAI_BASE_URL should be set to.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Push appends replies to the script.
func (s *Server) Push(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, r...)
}

// Requests returns the decoded bodies received so far.
func (s *Server) Requests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.requests...)
}

// Headers returns the headers of the requests received so far, in order.
func (s *Server) Headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.headers...)
}

// ReasoningModels makes the server refuse, as OpenAI does for its reasoning models, a request
// for one of these models that carries max_tokens or a temperature other than 1: a 400 with
// code unsupported_parameter or unsupported_value, without taking a reply from the script.
func (s *Server) ReasoningModels(models ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reasoning == nil {
		s.reasoning = map[string]bool{}
	}
	for _, m := range models {
		s.reasoning[m] = true
	}
}

// Answer is a successful reply with content and plausible usage.
func Answer(content string) Reply {
	return Reply{Content: content, FinishReason: "stop", PromptTokens: 120, CompletionTokens: 40}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		http.Error(w, `{"error": {"message": "not found", "type": "invalid_request_error"}}`, http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req map[string]any
	_ = json.Unmarshal(body, &req)
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.headers = append(s.headers, r.Header.Clone())
	n := len(s.requests)
	model, _ := req["model"].(string)
	if s.reasoning[model] {
		code, msg := "", ""
		if _, ok := req["max_tokens"]; ok {
			code, msg = "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
		} else if t, ok := req["temperature"]; ok && t != 1.0 {
			code, msg = "unsupported_value", fmt.Sprintf("Unsupported value: 'temperature' does not support %v with this model. Only the default (1) value is supported.", t)
		}
		if code != "" {
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Request-Id", fmt.Sprintf("req_test_%d", n))
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "code": code}})
			return
		}
	}
	var reply Reply
	if len(s.script) > 0 {
		reply, s.script = s.script[0], s.script[1:]
	} else {
		reply = Reply{Status: 500, ErrorType: "server_error", ErrorCode: "script_exhausted"}
	}
	s.mu.Unlock()
	if reply.Delay > 0 {
		select {
		case <-time.After(reply.Delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch reply.RequestID {
	case "":
		w.Header().Set("X-Request-Id", fmt.Sprintf("req_test_%d", n))
	case "-":
	default:
		w.Header().Set("X-Request-Id", reply.RequestID)
	}
	if reply.ProcessingMS != "" {
		w.Header().Set("Openai-Processing-Ms", reply.ProcessingMS)
	}
	if reply.RetryAfter != "" {
		w.Header().Set("Retry-After", reply.RetryAfter)
	}
	if reply.Status != 0 && reply.Status != http.StatusOK {
		w.WriteHeader(reply.Status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"message": fmt.Sprintf("scripted %d", reply.Status), "type": reply.ErrorType, "code": nullable(reply.ErrorCode),
		}})
		return
	}
	if reply.Model != "" {
		model = reply.Model
	}
	if reply.Flood > 0 {
		flood(w, model, reply.Flood)
		return
	}
	msg := map[string]any{"role": "assistant", "content": reply.Content}
	if reply.Refusal != "" {
		msg["content"] = nil
		msg["refusal"] = reply.Refusal
	}
	usage := map[string]any{"prompt_tokens": reply.PromptTokens, "completion_tokens": reply.CompletionTokens,
		"total_tokens": reply.PromptTokens + reply.CompletionTokens}
	if reply.ReasoningTokens != 0 {
		usage["completion_tokens_details"] = map[string]any{"reasoning_tokens": reply.ReasoningTokens}
	}
	json.NewEncoder(w).Encode(map[string]any{
		"id": "chatcmpl-test", "object": "chat.completion", "created": time.Now().Unix(), "model": model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": reply.FinishReason}},
		"usage":   usage,
	})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// flood writes a completion whose content is n bytes of 'a', in chunks.
func flood(w io.Writer, model string, n int64) {
	fmt.Fprintf(w, `{"id": "chatcmpl-flood", "object": "chat.completion", "created": %d, "model": %q, "choices": [{"index": 0, "message": {"role": "assistant", "content": "`, time.Now().Unix(), model)
	chunk := []byte(strings.Repeat("a", 64<<10))
	for n > 0 {
		c := chunk[:min(n, int64(len(chunk)))]
		if _, err := w.Write(c); err != nil {
			return // the client hung up, as it should
		}
		n -= int64(len(c))
	}
	fmt.Fprint(w, `"}, "finish_reason": "stop"}]}`)
}
