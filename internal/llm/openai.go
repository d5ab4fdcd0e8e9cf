package llm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/time/rate"
)

// Config configures an OpenAI-compatible provider (OpenAI, Azure-compatible gateways, Ollama,
// vLLM, llama.cpp servers).
type Config struct {
	Name    string
	BaseURL string
	APIKey  string
	// RequestsPerSecond limits calls from this process; 0 means unlimited.
	RequestsPerSecond float64
	Timeout           time.Duration
	// Transport is the HTTP transport underneath; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// MaxResponseBytes caps a response body as it is read; 0 means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// UserAgent identifies the client, such as pipectl/v1.2.0; empty means "pipectl".
	UserAgent string
	// Families says which family a model belongs to; nil means the built-in table.
	Families *Families
}

// OpenAI is a Provider on github.com/sashabaranov/go-openai.
type OpenAI struct {
	name     string
	client   *openai.Client
	limiter  *rate.Limiter
	timeout  time.Duration
	families *Families
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI builds a provider.
func NewOpenAI(cfg Config) *OpenAI {
	c := openai.DefaultConfig(cfg.APIKey)
	if cfg.BaseURL != "" {
		c.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	limit := cfg.MaxResponseBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "pipectl"
	}
	c.HTTPClient = &http.Client{Transport: &exchangeTransport{base: base, limit: limit, userAgent: ua}}
	p := &OpenAI{name: cfg.Name, client: openai.NewClientWithConfig(c), timeout: cfg.Timeout, families: cfg.Families}
	if cfg.RequestsPerSecond > 0 {
		p.limiter = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), max(1, int(cfg.RequestsPerSecond)))
	}
	if p.timeout == 0 {
		p.timeout = 2 * time.Minute
	}
	return p
}

// Complete sends one chat completion.
func (p *OpenAI) Complete(ctx context.Context, req Request) (Response, error) {
	if p.limiter != nil {
		if err := p.limiter.Wait(ctx); err != nil {
			return Response{}, &Error{Transient: true, Err: fmt.Errorf("rate limiter: %w", err)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	fam := p.families.Lookup(req.Model)
	ex := &exchange{fields: shapeFields(req, fam), clientRequestID: req.ClientRequestID}
	ctx = context.WithValue(ctx, exchangeKey{}, ex)

	// The token limit, temperature and reasoning effort never go through go-openai's request
	// type: it drops a temperature of 0 and refuses max_tokens and temperatures by model name
	// (o1, o3, o4, gpt-5), which would overrule the family a provider's configuration gives.
	// The transport writes them into the body as the family says.
	creq := openai.ChatCompletionRequest{Model: req.Model}
	for _, m := range req.Messages {
		creq.Messages = append(creq.Messages, openai.ChatCompletionMessage{Role: m.Role, Content: m.Content})
	}
	if len(req.Schema) > 0 && req.Strict {
		creq.ResponseFormat = &openai.ChatCompletionResponseFormat{
			Type:       openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: schemaName(req.SchemaName), Schema: req.Schema, Strict: true},
		}
	} else {
		creq.ResponseFormat = &openai.ChatCompletionResponseFormat{Type: openai.ChatCompletionResponseFormatTypeJSONObject}
	}
	start := time.Now()
	resp, err := p.client.CreateChatCompletion(ctx, creq)
	out := Response{Family: fam.Name, Latency: time.Since(start), RequestID: ex.requestID, ProcessingMS: ex.processingMS}
	if err != nil {
		return out, classify(ctx, err, ex)
	}
	out.Model = headerSafe(resp.Model, maxModelName)
	out.PromptTokens, out.CompletionTokens = resp.Usage.PromptTokens, resp.Usage.CompletionTokens
	if d := resp.Usage.CompletionTokensDetails; d != nil {
		n := d.ReasoningTokens
		out.ReasoningTokens = &n
	}
	if len(resp.Choices) == 0 {
		return out, &Error{Err: errors.New("the answer has no choices")}
	}
	ch := resp.Choices[0]
	out.Content, out.Refusal, out.FinishReason = ch.Message.Content, ch.Message.Refusal, string(ch.FinishReason)
	return out, nil
}

// shapeFields decides the settings the body carries, by family: the token limit under the
// family's field, temperature only where the family does not fix it, reasoning_effort only
// where the family takes it. Left-out settings are what validate warns about.
func shapeFields(req Request, fam Family) map[string]json.RawMessage {
	fields := map[string]json.RawMessage{}
	if req.MaxTokens > 0 {
		fields[fam.TokenField] = json.RawMessage(strconv.Itoa(req.MaxTokens))
	}
	if req.Temperature != nil && !fam.FixedSampling {
		fields["temperature"] = json.RawMessage(strconv.FormatFloat(*req.Temperature, 'g', -1, 64))
	}
	if req.ReasoningEffort != "" && fam.ReasoningEffort {
		b, _ := json.Marshal(req.ReasoningEffort)
		fields["reasoning_effort"] = b
	}
	return fields
}

func schemaName(n string) string {
	if n == "" {
		return "output"
	}
	return n
}

// classify turns a go-openai error into an *Error: 408, 409, 429 (but not insufficient_quota)
// and 5xx are transient, like timeouts and broken connections; 400, 401, 403, 404 and other
// 4xx are permanent.
func classify(ctx context.Context, err error, ex *exchange) error {
	if errors.Is(err, ErrResponseTooLarge) {
		// Asking again would bring the same flood; no part of it is kept.
		return &Error{StatusCode: ex.status, Err: err}
	}
	retryAfter := parseRetryAfter(ex.retryAfter)
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status, code := 0, ""
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
		if s, ok := apiErr.Code.(string); ok {
			code = s
		}
		if code == "" && apiErr.Type == "insufficient_quota" {
			code = apiErr.Type
		}
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	}
	if status == 0 {
		status = ex.status
	}
	if status != 0 {
		transient := status == 408 || status == 409 || status == 425 || status == 429 || status >= 500
		if code == "insufficient_quota" {
			transient = false // no amount of waiting buys more quota
		}
		return &Error{Transient: transient, StatusCode: status, Code: code, RetryAfter: retryAfter, Err: err}
	}
	var netErr net.Error
	if ctx.Err() != nil || errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection reset") {
		return &Error{Transient: true, Err: err}
	}
	return &Error{Err: err}
}

func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

type exchangeKey struct{}

// exchange carries what go-openai does not expose: the settings to write into the body and
// the client request id on the way out; the status and the headers pipectl records on the way
// back, for errors as well as answers (go-openai's resp.Header() exists only on success).
type exchange struct {
	fields          map[string]json.RawMessage
	clientRequestID string

	status       int
	retryAfter   string
	requestID    string
	processingMS *int64
}

// Bounds on what a provider's headers and model name may put into the ledger and a terminal.
const (
	maxRequestID = 200
	maxModelName = 200
)

type exchangeTransport struct {
	base      http.RoundTripper
	limit     int64
	userAgent string
}

func (t *exchangeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex, _ := req.Context().Value(exchangeKey{}).(*exchange)
	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", t.userAgent)
	if ex != nil && ex.clientRequestID != "" {
		req.Header.Set("X-Client-Request-Id", ex.clientRequestID)
	}
	if ex != nil && len(ex.fields) > 0 && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &fields) == nil {
			for k, v := range ex.fields {
				fields[k] = v
			}
			if patched, err := json.Marshal(fields); err == nil {
				body = patched
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := t.base.RoundTrip(req)
	if ex != nil && resp != nil {
		ex.status = resp.StatusCode
		ex.retryAfter = resp.Header.Get("Retry-After")
		ex.requestID = headerSafe(resp.Header.Get("X-Request-Id"), maxRequestID)
		ex.processingMS = parseProcessingMS(resp.Header.Get("Openai-Processing-Ms"))
	}
	if resp != nil && resp.Body != nil {
		resp.Body = &cappedBody{ReadCloser: resp.Body, left: t.limit, limit: t.limit}
	}
	return resp, err
}

// DefaultMaxResponseBytes caps a provider's response body: room for the largest answer a step
// accepts, JSON-escaped, plus the envelope.
const DefaultMaxResponseBytes = 8 << 20

// ErrResponseTooLarge: the provider sent more than the cap. The call fails permanently.
var ErrResponseTooLarge = errors.New("model response body is over the size limit")

// cappedBody fails the read that would go past the cap, so a flood is never held in memory:
// the JSON decoder and the error reader of go-openai stop at the error.
type cappedBody struct {
	io.ReadCloser
	left, limit int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the cap from a larger one.
		var one [1]byte
		if n, _ := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%w of %d bytes", ErrResponseTooLarge, b.limit)
		}
		return b.ReadCloser.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// headerSafe keeps what a provider sends printable and short before it reaches the ledger and
// `runs show`: no control characters or escape sequences, at most n bytes.
func headerSafe(s string, n int) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			clean = false
			break
		}
	}
	if !clean {
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r > 0x7e {
				return -1
			}
			return r
		}, s)
	}
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// parseProcessingMS reads openai-processing-ms: a whole number of milliseconds (some servers
// send a decimal). Anything else counts as not reported.
func parseProcessingMS(v string) *int64 {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 20 {
		return nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1e12 || f != f {
		return nil
	}
	ms := int64(f)
	return &ms
}
