package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/steps"
)

// countingStore is the real SQLite ledger with a count of the commits the engine asks for.
type countingStore struct {
	*ledger.Store
	commits atomic.Int64
}

func (c *countingStore) CreateRun(ctx context.Context, r *domain.Run, actor string, claim *domain.Claim) (*domain.Run, bool, error) {
	c.commits.Add(1)
	return c.Store.CreateRun(ctx, r, actor, claim)
}
func (c *countingStore) Transition(ctx context.Context, id string, ch domain.Change) error {
	c.commits.Add(1)
	return c.Store.Transition(ctx, id, ch)
}
func (c *countingStore) StartAttempt(ctx context.Context, owner string, a *domain.Attempt) error {
	c.commits.Add(1)
	return c.Store.StartAttempt(ctx, owner, a)
}
func (c *countingStore) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	c.commits.Add(1)
	return c.Store.FinishAttempt(ctx, owner, a, ch)
}
func (c *countingStore) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	c.commits.Add(1)
	return c.Store.CommitAttempts(ctx, owner, done, start, ch)
}

type bundle struct {
	store *countingStore
	eng   *engine.Engine
	v     *dsl.Validator
	logs  *syncBuffer
	dir   string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func setup(t testing.TB) *bundle {
	t.Helper()
	dir := t.TempDir()
	st, err := ledger.Open(context.Background(), "sqlite:"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	store := &countingStore{Store: st}
	eng := &engine.Engine{
		Store:    store,
		Renderer: dsl.NewEvaluator(v.Expressions()),
		Steps: map[domain.StepType]domain.StepExecutor{
			domain.StepTransform: steps.Transform{},
			domain.StepHTTP:      steps.NewHTTP(nil),
			domain.StepExec:      steps.Exec{},
		},
		Log:               slog.New(slog.NewJSONHandler(logs, nil)),
		Owner:             engine.CurrentOwner(),
		Actor:             "test",
		Version:           "test",
		LeaseTTL:          5 * time.Second,
		UnknownRetryDelay: 10 * time.Millisecond,
	}
	return &bundle{store: store, eng: eng, v: v, logs: logs, dir: dir}
}

func (b *bundle) pipeline(t testing.TB, spec string) *domain.Pipeline {
	t.Helper()
	path := filepath.Join(b.dir, fmt.Sprintf("p%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	p, diags, err := b.v.ParseFile(path)
	if err != nil || p == nil {
		t.Fatalf("invalid test pipeline: %v %v", err, diags)
	}
	return p
}

func (b *bundle) run(t testing.TB, p *domain.Pipeline, input any, opts engine.RunOptions) *engine.Result {
	t.Helper()
	res, err := b.eng.Run(context.Background(), p, input, opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

func (b *bundle) attempts(t testing.TB, runID string) []domain.Attempt {
	t.Helper()
	as, err := b.store.Attempts(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

const header = "apiVersion: pipectl/v1\nkind: Pipeline\nname: t\n"

// target is a real HTTP server that applies each Idempotency-Key once, as a well-behaved API
// does, and can be scripted to fail.
type target struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string]int // by Idempotency-Key
	applied  map[string]int
	script   []func(w http.ResponseWriter, r *http.Request) bool
	total    atomic.Int64
}

func newTarget(t testing.TB) *target {
	tg := &target{requests: map[string]int{}, applied: map[string]int{}}
	tg.Server = httptest.NewServer(http.HandlerFunc(tg.serve))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) serve(w http.ResponseWriter, r *http.Request) {
	tg.total.Add(1)
	tg.mu.Lock()
	var step func(w http.ResponseWriter, r *http.Request) bool
	if len(tg.script) > 0 {
		step = tg.script[0]
		tg.script = tg.script[1:]
	}
	key := r.Header.Get("Idempotency-Key")
	tg.requests[key]++
	tg.mu.Unlock()
	if step != nil && step(w, r) {
		return
	}
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		tg.mu.Lock()
		fmt.Fprintf(w, `{"path": %q, "applied": %d}`, r.URL.Path, len(tg.applied))
		tg.mu.Unlock()
		return
	}
	body, _ := io.ReadAll(r.Body)
	tg.mu.Lock()
	tg.applied[key]++
	first := tg.applied[key] == 1
	tg.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !first {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"ok": true, "echo": %s}`, jsonOr(body))
}

func jsonOr(b []byte) string {
	if len(bytes.TrimSpace(b)) == 0 {
		return "null"
	}
	return string(b)
}

func status(code int, headers ...string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error": "scripted %d"}`, code)
		return true
	}
}

func reset(w http.ResponseWriter, r *http.Request) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, _ := hj.Hijack()
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0) // RST instead of FIN
	}
	conn.Close()
	return true
}

func hang(d time.Duration) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		return true
	}
}

func TestTransformPipelineCommits(t *testing.T) {
	b := setup(t)
	p := b.pipeline(t, header+`
inputs: {type: object, properties: {n: {type: integer}}}
steps:
  - {id: a, type: transform, output: {double: "${{ inputs.n * 2 }}"}}
  - {id: b, type: transform, output: "${{ steps.a.output.double + 1 }}"}
  - id: c
    type: transform
    output: "n=${{ inputs.n }} b=${{ steps.b.output }} run=${{ run.pipeline }}"
`)
	res := b.run(t, p, map[string]any{"n": int64(20)}, engine.RunOptions{})
	if res.Run.State != domain.StateSucceeded {
		t.Fatalf("state %s: %s", res.Run.State, res.Run.Error)
	}
	as := b.attempts(t, res.Run.ID)
	if len(as) != 3 || string(as[2].Output) != `"n=20 b=41 run=t"` {
		t.Fatalf("attempts %+v", as)
	}
	// One commit creates and claims the run; the pure steps' attempts go together with the
	// run's completion.
	if got := b.store.commits.Load(); got != 2 {
		t.Fatalf("commits = %d, want 2", got)
	}
}

func TestHTTPRetriesTransientThenSucceeds(t *testing.T) {
	b := setup(t)
	tg := newTarget(t)
	tg.script = append(tg.script, status(503), reset, status(429, "Retry-After", "1"))
	p := b.pipeline(t, header+`
defaults:
  retry: {max_attempts: 5, initial_interval: 10ms, max_interval: 50ms}
steps:
  - id: post
    type: http
    method: POST
    url: `+tg.URL+`/labels
    body: {label: x}
`)
	start := time.Now()
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if res.Run.State != domain.StateSucceeded {
		t.Fatalf("state %s: %s", res.Run.State, res.Run.Error)
	}
	if time.Since(start) < time.Second {
		t.Fatal("Retry-After: 1 was not honoured")
	}
	as := b.attempts(t, res.Run.ID)
	// Go's transport replays a request that carries an Idempotency-Key when a reused
	// connection breaks before any answer, so the reset may not surface as an attempt.
	if len(as) < 3 || len(as) > 4 || as[len(as)-1].Outcome != domain.OutcomeSucceeded {
		t.Fatalf("want 3 or 4 attempts ending in success, got %d", len(as))
	}
	for i, a := range as[:len(as)-1] {
		if a.Outcome != domain.OutcomeFailed || a.ErrorClass != domain.ClassTransient {
			t.Fatalf("attempt %d: %s %s %s", i+1, a.Outcome, a.ErrorClass, a.Error)
		}
	}
	if len(tg.requests) != 1 || len(tg.applied) != 1 {
		t.Fatalf("every attempt must carry the same step key: requests %v applied %v", tg.requests, tg.applied)
	}
	for key, n := range tg.requests {
		if n != 4 || key != as[0].StepKey || tg.applied[key] != 1 {
			t.Fatalf("key %s seen %d times; ledger step key %s", key, n, as[0].StepKey)
		}
	}
	events, _ := b.store.Events(context.Background(), res.Run.ID)
	var path []string
	for _, e := range events {
		path = append(path, string(e.To))
	}
	want := strings.Repeat("failed_transient,processing,", len(as)-1)
	if got := strings.Join(path, ","); got != "queued,processing,"+want+"succeeded" {
		t.Fatalf("transitions %s", got)
	}
}

func TestHTTPPermanentAndExhausted(t *testing.T) {
	tests := []struct {
		name     string
		script   []func(http.ResponseWriter, *http.Request) bool
		attempts int
		class    domain.ErrorClass
		errText  string
	}{
		{"404 fails at once", []func(http.ResponseWriter, *http.Request) bool{status(404)}, 1, domain.ClassPermanent, "HTTP 404"},
		{"401 fails at once", []func(http.ResponseWriter, *http.Request) bool{status(401)}, 1, domain.ClassPermanent, "HTTP 401"},
		{"503 until exhausted", []func(http.ResponseWriter, *http.Request) bool{status(503), status(502), status(504)}, 3, domain.ClassTransient, "attempts exhausted (3 of 3)"},
		{"timeouts until exhausted", []func(http.ResponseWriter, *http.Request) bool{hang(2 * time.Second), hang(2 * time.Second), hang(2 * time.Second)}, 3, domain.ClassTransient, "timed out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tg := newTarget(t)
			tg.script = tc.script
			p := b.pipeline(t, header+`
defaults:
  timeout: 200ms
  retry: {max_attempts: 3, initial_interval: 5ms, max_interval: 20ms}
steps:
  - {id: post, type: http, method: PUT, url: "`+tg.URL+`/x"}
  - {id: after, type: transform, output: 1}
`)
			res := b.run(t, p, map[string]any{}, engine.RunOptions{})
			r := res.Run
			if r.State != domain.StateFailedPermanent || r.FailedStep != "post" || r.ErrorClass != tc.class || !strings.Contains(r.Error, tc.errText) {
				t.Fatalf("run %s step=%s class=%s error=%q", r.State, r.FailedStep, r.ErrorClass, r.Error)
			}
			as := b.attempts(t, r.ID)
			if len(as) != tc.attempts {
				t.Fatalf("attempts %d, want %d", len(as), tc.attempts)
			}
			if string(r.Input) != "{}" {
				t.Fatalf("dead letter lost its input snapshot: %s", r.Input)
			}
		})
	}
}

func TestHTTPGuardSkipsTheWrite(t *testing.T) {
	b := setup(t)
	tg := newTarget(t)
	p := b.pipeline(t, header+`
steps:
  - id: write
    type: http
    method: POST
    url: `+tg.URL+`/things
    guard:
      url: `+tg.URL+`/things/1
      done_if: ${{ response.status == 200 && response.body.path == "/things/1" }}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	as := b.attempts(t, res.Run.ID)
	if res.Run.State != domain.StateSucceeded || as[0].Outcome != domain.OutcomeGuarded || len(tg.applied) != 0 {
		t.Fatalf("state %s outcome %s applied %v", res.Run.State, as[0].Outcome, tg.applied)
	}
}

func TestDryRunSendsNothing(t *testing.T) {
	b := setup(t)
	tg := newTarget(t)
	p := b.pipeline(t, header+`
steps:
  - {id: read, type: http, url: "`+tg.URL+`/state"}
  - {id: write, type: http, method: POST, url: "`+tg.URL+`/things", body: {from: "${{ steps.read.output.body.path }}"}}
  - {id: touch, type: exec, command: [touch, "`+filepath.Join(b.dir, "touched")+`"]}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{DryRun: true})
	as := b.attempts(t, res.Run.ID)
	if res.Run.State != domain.StateSucceeded || !res.Run.DryRun || len(as) != 3 {
		t.Fatalf("state %s dry %v attempts %d", res.Run.State, res.Run.DryRun, len(as))
	}
	if as[1].Outcome != domain.OutcomeDryRun || !strings.Contains(string(as[1].Request), `"from":"/state"`) {
		t.Fatalf("write attempt %s %s", as[1].Outcome, as[1].Request)
	}
	if len(tg.applied) != 0 || tg.total.Load() != 1 {
		t.Fatalf("a dry run sent a write: %v", tg.applied)
	}
	if _, err := os.Stat(filepath.Join(b.dir, "touched")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a dry run ran an exec step")
	}
	// A dry run does not occupy the run key: a real run of the same input is a new run.
	real := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if real.Duplicate || real.Run.ID == res.Run.ID || len(tg.applied) != 1 {
		t.Fatalf("real run after a dry run: dup=%v applied=%v", real.Duplicate, tg.applied)
	}
}

func writeScript(t testing.TB, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExecTransientExitThenSuccess(t *testing.T) {
	b := setup(t)
	counter := filepath.Join(b.dir, "count")
	script := writeScript(t, b.dir, "flaky", `n=$(cat "$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$1"
if [ $n -lt 3 ]; then echo "not yet ($PIPECTL_ATTEMPT)" >&2; exit 75; fi
printf '{"n": %d, "step": "%s", "key": "%s"}' $n "$PIPECTL_STEP" "$PIPECTL_IDEMPOTENCY_KEY"
`)
	p := b.pipeline(t, header+`
defaults:
  retry: {max_attempts: 4, initial_interval: 5ms, max_interval: 10ms}
steps:
  - {id: flaky, type: exec, command: ["`+script+`", "`+counter+`"], output: json}
  - {id: use, type: transform, output: "${{ steps.flaky.output.stdout.n }}"}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	as := b.attempts(t, res.Run.ID)
	if res.Run.State != domain.StateSucceeded || len(as) != 4 || string(as[3].Output) != "3" {
		t.Fatalf("state %s attempts %d last %s", res.Run.State, len(as), as[len(as)-1].Output)
	}
	if as[0].ErrorClass != domain.ClassTransient || !strings.Contains(as[0].Error, "exit status 75: not yet (1)") {
		t.Fatalf("first attempt: %s %s", as[0].ErrorClass, as[0].Error)
	}
	if !strings.Contains(string(as[2].Output), `"key":"`+as[0].StepKey+`"`) {
		t.Fatalf("PIPECTL_IDEMPOTENCY_KEY was not the step key: %s", as[2].Output)
	}
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	b := setup(t)
	pidfile := filepath.Join(b.dir, "grandchild.pid")
	script := writeScript(t, b.dir, "slow", `sleep 30 &
echo $! > "$1"
wait
`)
	p := b.pipeline(t, header+`
steps:
  - id: slow
    type: exec
    timeout: 300ms
    retry: {max_attempts: 1}
    command: ["`+script+`", "`+pidfile+`"]
`)
	start := time.Now()
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if time.Since(start) > 10*time.Second {
		t.Fatal("the timeout did not stop the step")
	}
	if res.Run.State != domain.StateFailedPermanent || !strings.Contains(res.Run.Error, "timed out") {
		t.Fatalf("state %s error %q", res.Run.State, res.Run.Error)
	}
	raw, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(raw))
	deadline := time.Now().Add(3 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return // gone (or a zombie awaiting its reaper)
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %s survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIfSkipsAndForEachFansOut(t *testing.T) {
	b := setup(t)
	p := b.pipeline(t, header+`
limits: {max_parallel: 4}
steps:
  - {id: skipped, type: transform, if: "${{ false }}", output: 1}
  - id: fan
    type: transform
    needs: []
    for_each: ${{ ["a", "b", "c", "d"] }}
    max_parallel: 3
    output: ${{ item + string(index) }}
  - {id: join, type: transform, needs: [fan, skipped], output: "${{ steps.fan.output.join(\",\") }}"}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	as := b.attempts(t, res.Run.ID)
	last := as[len(as)-1]
	if res.Run.State != domain.StateSucceeded || string(last.Output) != `"a0,b1,c2,d3"` {
		t.Fatalf("state %s last %s", res.Run.State, last.Output)
	}
	if as[0].StepID != "skipped" || as[0].Outcome != domain.OutcomeSkipped {
		t.Fatalf("first attempt %+v", as[0])
	}
}

func TestRunTimeoutDeadLetters(t *testing.T) {
	b := setup(t)
	script := writeScript(t, b.dir, "slow", "sleep 5\n")
	p := b.pipeline(t, header+`
limits: {run_timeout: 300ms}
defaults: {timeout: 200ms}
steps:
  - {id: slow, type: exec, command: ["`+script+`"], timeout: 250ms}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if res.Run.State != domain.StateFailedPermanent {
		t.Fatalf("state %s", res.Run.State)
	}
}

func TestSecretsNeverReachLedgerOrLogs(t *testing.T) {
	b := setup(t)
	tg := newTarget(t)
	const secret = "s3cr3t-Value/with+chars"
	p := b.pipeline(t, header+`
secrets: [API_TOKEN]
steps:
  - id: call
    type: http
    method: POST
    url: `+tg.URL+`/x?token=${{ secrets.API_TOKEN }}
    headers: {Authorization: "Bearer ${{ secrets.API_TOKEN }}", X-Echo: "${{ secrets.API_TOKEN }}"}
    body: {echo: "no secret here"}
  - id: fail
    type: exec
    retry: {max_attempts: 1}
    command: [sh, -uc, 'echo leaking "$TOKEN" >&2; exit 3']
    env: {TOKEN: "${{ secrets.API_TOKEN }}"}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{Secrets: map[string]string{"API_TOKEN": secret}})
	if res.Run.State != domain.StateFailedPermanent || !strings.Contains(res.Run.Error, "leaking ***") {
		t.Fatalf("state %s error %q", res.Run.State, res.Run.Error)
	}
	b.store.Close()
	for _, name := range []string{"ledger.db", "ledger.db-wal"} {
		data, err := os.ReadFile(filepath.Join(b.dir, name))
		if err != nil {
			continue
		}
		for _, form := range []string{secret, "s3cr3t-Value%2Fwith%2Bchars", "s3cr3t-Value\\/with+chars"} {
			if bytes.Contains(data, []byte(form)) {
				t.Fatalf("%s holds the secret as %q", name, form)
			}
		}
	}
	if strings.Contains(b.logs.String(), secret) {
		t.Fatal("the logs hold the secret")
	}
	if !strings.Contains(b.logs.String(), "***") {
		t.Fatal("the logs show no redaction at all; is the test looking at the right place?")
	}
}

// unknownExec fails with an unclassified error a set number of times.
type unknownExec struct{ fails atomic.Int64 }

func (u *unknownExec) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	if u.fails.Add(-1) >= 0 {
		return domain.StepResult{}, errors.New("something odd")
	}
	return domain.StepResult{Output: "fine"}, nil
}

func TestUnknownErrorsGetOneShortRetry(t *testing.T) {
	for _, fails := range []int64{1, 2} {
		t.Run(fmt.Sprint(fails), func(t *testing.T) {
			b := setup(t)
			ex := &unknownExec{}
			ex.fails.Store(fails)
			b.eng.Steps[domain.StepTransform] = ex
			p := b.pipeline(t, header+"defaults: {retry: {max_attempts: 5}}\nsteps:\n  - {id: odd, type: transform, output: 1}\n")
			res := b.run(t, p, map[string]any{}, engine.RunOptions{})
			want := domain.StateSucceeded
			if fails == 2 {
				want = domain.StateFailedPermanent
			}
			if res.Run.State != want {
				t.Fatalf("state %s, want %s (%s)", res.Run.State, want, res.Run.Error)
			}
			if fails == 2 && (res.Run.ErrorClass != domain.ClassUnknown || !strings.Contains(res.Run.Error, "error type *errors.errorString")) {
				t.Fatalf("dead letter without the error chain: %s %q", res.Run.ErrorClass, res.Run.Error)
			}
		})
	}
}

func TestDuplicateSubmission(t *testing.T) {
	b := setup(t)
	tg := newTarget(t)
	p := b.pipeline(t, header+`
inputs: {type: object, properties: {id: {type: string}, v: {type: integer}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: post, type: http, method: POST, url: "`+tg.URL+`/x"}
`)
	first := b.run(t, p, map[string]any{"id": "A", "v": int64(1)}, engine.RunOptions{})
	// Create and claim, then the side effect's intent and its result (carrying the completion).
	if got := b.store.commits.Load(); got != 3 {
		t.Fatalf("commits for one side-effecting step: %d, want 3", got)
	}
	again := b.run(t, p, map[string]any{"id": "A", "v": int64(1)}, engine.RunOptions{})
	if !again.Duplicate || again.Run.ID != first.Run.ID || len(tg.applied) != 1 || tg.total.Load() != 1 {
		t.Fatalf("duplicate: %+v applied %v", again, tg.applied)
	}
	_, err := b.eng.Run(context.Background(), p, map[string]any{"id": "A", "v": int64(2)}, engine.RunOptions{})
	if !errors.Is(err, engine.ErrIdempotencyConflict) {
		t.Fatalf("same key, other input: %v", err)
	}
}

// A permanent failure while another step is in flight: the other finishes and is recorded,
// nothing new starts, and the run is dead-lettered in the commit of the last result.
func TestFailureWaitsForStepsInFlight(t *testing.T) {
	b := setup(t)
	slow := writeScript(t, b.dir, "slow", "sleep 0.3; echo done\n")
	p := b.pipeline(t, header+`
limits: {max_parallel: 2}
steps:
  - {id: slow, type: exec, needs: [], command: ["`+slow+`"]}
  - {id: broken, type: exec, needs: [], command: [sh, "-u", "/dev/stdin"], stdin: "exit 3", retry: {max_attempts: 1}}
  - {id: after, type: transform, needs: [slow, broken], output: 1}
`)
	res := b.run(t, p, map[string]any{}, engine.RunOptions{})
	if res.Run.State != domain.StateFailedPermanent || res.Run.FailedStep != "broken" {
		t.Fatalf("state %s step %s", res.Run.State, res.Run.FailedStep)
	}
	as := b.attempts(t, res.Run.ID)
	outcomes := map[string]string{}
	for _, a := range as {
		outcomes[a.StepID] = a.Outcome
	}
	if outcomes["slow"] != domain.OutcomeSucceeded || outcomes["broken"] != domain.OutcomeFailed || outcomes["after"] != "" {
		t.Fatalf("outcomes %v", outcomes)
	}
}
