package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/pipectl/pipectl/internal/domain"
)

// maxResponseBody bounds what a response may bring into the ledger and into memory.
const maxResponseBody = 10 << 20

// HTTP sends one request per attempt. It uses go-retryablehttp's client and its retry policy
// to classify failures, but never its retry loop: the engine retries, so that every attempt is a
// row in the ledger.
type HTTP struct {
	client *retryablehttp.Client
}

var _ domain.StepExecutor = (*HTTP)(nil)

// NewHTTP builds the http step executor. A nil transport means the default one; pipeline
// tests pass one that answers from fixtures.
func NewHTTP(transport http.RoundTripper) *HTTP {
	c := retryablehttp.NewClient()
	if transport != nil {
		c.HTTPClient.Transport = transport
	}
	c.RetryMax = 0
	c.Logger = nil
	// Hand back the response or error of the single attempt untouched; classification is ours.
	c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) { return false, err }
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.HTTPClient.CheckRedirect = checkRedirect
	return &HTTP{client: c}
}

// maxRedirects bounds how many redirects a GET or HEAD follows.
const maxRedirects = 5

// checkRedirect follows redirects of reads only: a redirected write would silently turn into a
// GET (and a 307 or 308 would send its body to wherever the server points), so it is reported
// as the response it is. A redirect to another origin (scheme, host or port) loses every header
// whose value came from a secret, besides the Authorization and Cookie headers Go drops itself:
// a server must not be able to send a credential to a host of its choosing.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return http.ErrUseLastResponse
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if origin(req.URL) != origin(via[0].URL) {
		names, _ := req.Context().Value(secretHeadersKey{}).([]string)
		for _, name := range names {
			req.Header.Del(name)
		}
	}
	return nil
}

// origin is scheme://host:port, with the scheme's default port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// secretHeadersKey carries the names of the headers that hold secrets to checkRedirect.
type secretHeadersKey struct{}

// httpRequest is the rendered request, as the ledger records it: the values computed from
// secrets appear as *** (in the headers and in the URL's query), and are sent from the
// unexported fields.
type httpRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    any               `json:"body,omitempty"`
	body    []byte
	url     string
	headers map[string]string
	// secretHeaders are the names of the headers computed from secrets.
	secretHeaders []string
}

// setHeader sets a header that holds no secret.
func (r *httpRequest) setHeader(k, v string) {
	r.Headers[k] = v
	r.headers[k] = v
}

// Execute probes the guard, then sends the request.
func (h *HTTP) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	spec := call.Step.HTTP
	sideEffect := call.Step.SideEffecting()
	if g := spec.Guard; g != nil {
		probe, err := h.render(call, g.Method, g.URL, g.Headers, g.Query, nil, false)
		if err != nil {
			return domain.StepResult{}, err
		}
		resp, err := h.send(ctx, probe)
		if err != nil {
			return domain.StepResult{Request: probe}, fmt.Errorf("guard: %w", err)
		}
		done, err := call.RenderWith(g.DoneIf, map[string]any{"response": resp})
		if err != nil {
			return domain.StepResult{Request: probe, Response: resp}, domain.Permanent(fmt.Errorf("guard.done_if: %w", err))
		}
		if done == true {
			return domain.StepResult{Output: resp, Outcome: domain.OutcomeGuarded, Request: probe, Response: resp}, nil
		}
	}
	req, err := h.render(call, spec.Method, spec.URL, spec.Headers, spec.Query, spec.Body, true)
	if err != nil {
		return domain.StepResult{}, err
	}
	if sideEffect {
		// The step key wins over any header spelled like it: the validator refuses such a
		// header, and a spec that slipped past it must not send two keys.
		for k := range req.Headers {
			if strings.EqualFold(k, spec.IdempotencyHeader) {
				delete(req.Headers, k)
				delete(req.headers, k)
			}
		}
		req.setHeader(spec.IdempotencyHeader, call.StepKey)
		if call.DryRun {
			out := map[string]any{"status": int64(0), "headers": map[string]any{}, "body": nil}
			return domain.StepResult{Output: out, Outcome: domain.OutcomeDryRun, Request: req}, nil
		}
	}
	if sideEffect && call.Fence != nil {
		if err := call.Fence(ctx); err != nil {
			return domain.StepResult{Request: req}, err
		}
	}
	resp, err := h.send(ctx, req)
	if err != nil {
		return domain.StepResult{Request: req}, err
	}
	status := int(resp["status"].(int64))
	result := domain.StepResult{Output: resp, Outcome: domain.OutcomeSucceeded, Request: req, Response: resp}
	if expected(spec.ExpectStatus, status) {
		return result, nil
	}
	return result, statusError(status, resp, call.Redactor)
}

func (h *HTTP) render(call *domain.StepCall, method, rawURL string, headers, query map[string]string, body any, withBody bool) (*httpRequest, error) {
	u, err := renderText(call, rawURL, "url")
	if err != nil {
		return nil, err
	}
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return nil, domain.Permanentf("url %q is not an absolute http(s) URL", u)
	}
	shownURL := *parsed
	if len(query) > 0 {
		values, secret, err := renderSinkMap(call, query, "query")
		if err != nil {
			return nil, err
		}
		q, sq := parsed.Query(), parsed.Query()
		for k, v := range values {
			q.Set(k, v)
			sq.Set(k, v)
			if secret[k] {
				sq.Set(k, domain.Redacted)
			}
		}
		parsed.RawQuery = q.Encode()
		shownURL.RawQuery = strings.ReplaceAll(sq.Encode(), url.QueryEscape(domain.Redacted), domain.Redacted)
	}
	hdrs, secret, err := renderSinkMap(call, headers, "headers")
	if err != nil {
		return nil, err
	}
	req := &httpRequest{Method: method, URL: shownURL.String(), Headers: shown(hdrs, secret), url: parsed.String(), headers: hdrs}
	for k := range secret {
		req.secretHeaders = append(req.secretHeaders, k)
	}
	sort.Strings(req.secretHeaders)
	if withBody && body != nil {
		rendered, err := call.Render(body)
		if err != nil {
			return nil, domain.Permanent(fmt.Errorf("body: %w", err))
		}
		req.Body = rendered
		if s, ok := rendered.(string); ok {
			req.body = []byte(s)
		} else {
			if req.body, err = jsonMarshal(rendered); err != nil {
				return nil, domain.Permanent(fmt.Errorf("body: %w", err))
			}
			if !hasHeader(hdrs, "Content-Type") {
				req.setHeader("Content-Type", "application/json")
			}
		}
	}
	return req, nil
}

func hasHeader(h map[string]string, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// send performs one exchange and returns {status, headers, body}, the body parsed when JSON.
func (h *HTTP) send(ctx context.Context, r *httpRequest) (map[string]any, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	if len(r.secretHeaders) > 0 {
		ctx = context.WithValue(ctx, secretHeadersKey{}, r.secretHeaders)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, r.Method, r.url, body)
	if err != nil {
		return nil, domain.Permanent(err)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, classifyNetworkError(ctx, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody+1))
	if err != nil {
		return nil, classifyNetworkError(ctx, fmt.Errorf("reading the response: %w", err))
	}
	if len(raw) > maxResponseBody {
		return nil, domain.Permanentf("response body larger than %d bytes", maxResponseBody)
	}
	headers := map[string]any{}
	for k, vs := range resp.Header {
		headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	var parsed any = string(raw)
	if len(raw) == 0 {
		parsed = nil
	} else if v, err := domain.DecodeJSON(raw); err == nil {
		parsed = v
	}
	return map[string]any{"status": int64(resp.StatusCode), "headers": headers, "body": parsed}, nil
}

// classifyNetworkError uses go-retryablehttp's policy: what it would retry is transient.
func classifyNetworkError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return domain.Transient(fmt.Errorf("timed out: %w", err))
		}
		return err // the run is being stopped; not the step's failure
	}
	if retry, _ := retryablehttp.DefaultRetryPolicy(context.Background(), nil, err); retry {
		return domain.Transient(err)
	}
	return domain.Permanent(err)
}

func expected(codes []int, status int) bool {
	if len(codes) == 0 {
		return status >= 200 && status < 300
	}
	for _, c := range codes {
		if c == status {
			return true
		}
	}
	return false
}

// statusError classifies an unexpected status: 408, 425, 429 and 5xx are worth retrying. The
// body is redacted whole before it is cut, since a cut secret is no longer recognised.
func statusError(status int, resp map[string]any, red *domain.Redactor) error {
	snippet := red.Head(textOf(resp["body"]), 300)
	err := fmt.Errorf("HTTP %d %s: %s", status, http.StatusText(status), snippet)
	switch {
	case status == 408 || status == 425 || status == 429 || status >= 500:
		ce := &domain.ClassifiedError{Class: domain.ClassTransient, Err: err}
		if h, ok := resp["headers"].(map[string]any); ok {
			ce.RetryAfter = retryAfter(fmt.Sprint(h["retry-after"]), time.Now())
		}
		return ce
	}
	return domain.Permanent(err)
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" || v == "<nil>" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
