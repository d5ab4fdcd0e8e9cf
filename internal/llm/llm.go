// Package llm asks model providers for structured output: a small Provider interface, an OpenAI-compatible implementation on go-openai shaped by model family, and recording and replay of exchanges.
package llm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one call to a model.
type Request struct {
	// Step names the pipeline step for recordings and scripted answers; it is never sent.
	Step        string    `json:"step,omitempty"`
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	Temperature *float64  `json:"temperature,omitempty"`
	// MaxTokens is the step's limit; the model's family decides the field that carries it.
	MaxTokens       int    `json:"max_tokens,omitempty"`
	ReasoningEffort string `json:"reasoning_effort,omitempty"`
	// Schema is the JSON Schema of the answer. Strict asks for strict structured output;
	// otherwise the provider is asked for a JSON object and the gate checks the schema.
	SchemaName string          `json:"schema_name,omitempty"`
	Schema     json.RawMessage `json:"schema,omitempty"`
	Strict     bool            `json:"strict,omitempty"`
	// ClientRequestID goes out as X-Client-Request-Id. It names one call of one attempt, not
	// its content, so it is neither recorded with the request nor part of its Key.
	ClientRequestID string `json:"-"`
}

// Key identifies a request by its content, for replay: the same step asking the same thing
// gets the recorded answer.
func (r Request) Key() string {
	r.Step = ""
	b, _ := json.Marshal(r)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Finish reasons that are outcomes of their own, not parse errors.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishContentFilter = "content_filter"
)

// Response is what a model answered.
type Response struct {
	Content          string `json:"content"`
	Refusal          string `json:"refusal,omitempty"`
	FinishReason     string `json:"finish_reason"`
	Model            string `json:"model,omitempty"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	// ReasoningTokens is the part of CompletionTokens spent on reasoning, when reported.
	ReasoningTokens *int `json:"reasoning_tokens,omitempty"`
	// Family is the model family the request was shaped for.
	Family string `json:"family,omitempty"`
	// RequestID (x-request-id) and ProcessingMS (openai-processing-ms) come from the response
	// headers, when the provider sends them; they are set on errors too.
	RequestID    string `json:"request_id,omitempty"`
	ProcessingMS *int64 `json:"processing_ms,omitempty"`
	// Latency is measured around the provider call.
	Latency time.Duration `json:"-"`
}

// Provider answers requests. Implementations must be safe for concurrent use and must stop
// when ctx ends. Errors should be *Error so that callers can tell what is worth retrying.
type Provider interface {
	Complete(ctx context.Context, req Request) (Response, error)
}

// Error is a provider failure with what a caller needs to decide about retrying.
type Error struct {
	// Transient: rate limits, server errors, timeouts, broken connections.
	Transient  bool
	StatusCode int
	// Code is the provider's error code, such as insufficient_quota.
	Code       string
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("model provider: HTTP %d: %v", e.StatusCode, e.Err)
	}
	return fmt.Sprintf("model provider: %v", e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying; RetryAfter returns the delay the provider
// asked for.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// RetryAfter returns the delay a provider asked for, or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
