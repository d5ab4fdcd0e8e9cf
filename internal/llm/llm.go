// Package llm asks model providers for structured output: a small Provider interface, an OpenAI-compatible implementation on go-openai, and recording and replay of exchanges.
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
	MaxTokens   int       `json:"max_tokens,omitempty"`
	// Schema is the JSON Schema of the answer. Strict asks for strict structured output;
	// otherwise the provider is asked for a JSON object and the gate checks the schema.
	SchemaName string          `json:"schema_name,omitempty"`
	Schema     json.RawMessage `json:"schema,omitempty"`
	Strict     bool            `json:"strict,omitempty"`
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
