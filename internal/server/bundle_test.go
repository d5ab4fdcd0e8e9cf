package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/operate"
	"github.com/pipectl/pipectl/internal/server"
	"github.com/pipectl/pipectl/internal/steps"
	"github.com/pipectl/pipectl/internal/worker"
)

// ordersSpec pauses large orders for a person: the gate's review rule holds the proposal.
const ordersSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: orders
inputs:
  type: object
  required: [id, qty]
  additionalProperties: false
  properties: {id: {type: string}, qty: {type: integer, minimum: 1}}
triggers:
  webhook: {secret: ORDERS_HOOK_SECRET}
steps:
  - id: check
    type: gate
    input: ${{ inputs }}
    schema: {type: object}
    rules:
      - expr: output.qty < 10
        message: large orders need a person
        on_fail: review
  - id: done
    type: transform
    output: "${{ steps.check.output.id }}"
`

// mappedSpec takes its input from parts of a larger delivery body.
const mappedSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: mapped
inputs:
  type: object
  required: [id, qty]
  additionalProperties: false
  properties: {id: {type: string, pattern: "^[a-z0-9-]+$"}, qty: {type: integer, minimum: 1}}
triggers:
  webhook:
    secret: ORDERS_HOOK_SECRET
    input: {id: "${{ body.order.ref }}", qty: "${{ size(body.order.lines) }}"}
steps:
  - {id: done, type: transform, output: "${{ inputs.id }}"}
`

const waitSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: waiter
inputs: {type: object, properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: callback
    type: wait
    timeout: 1h
    schema: {type: object, required: [ok], properties: {ok: {type: boolean}}}
`

const hookSecret = "s3cret-for-tests"

// The roles' tokens; a token's name is its role with a suffix.
var roles = []server.Role{server.RoleViewer, server.RoleReviewer, server.RoleOperator, server.RoleAdmin}

type bundle struct {
	t      testing.TB
	url    string
	store  *ledger.Store
	ops    *operate.Ops
	srv    *server.Server
	tokens map[server.Role]string
	client *http.Client
}

// ledgers returns the ledgers a test runs against: a SQLite file, and PostgreSQL when
// PIPECTL_TEST_POSTGRES names a server.
func ledgers(t testing.TB) map[string]func(t testing.TB) string {
	out := map[string]func(t testing.TB) string{
		"sqlite": func(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "ledger.db") },
	}
	if dsn := os.Getenv("PIPECTL_TEST_POSTGRES"); dsn != "" {
		out["postgres"] = func(t testing.TB) string { return ledger.PostgresTestSchema(t, dsn) }
	}
	return out
}

func parse(t testing.TB, v *dsl.Validator, dir, name, src string) *domain.Pipeline {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, diags, err := v.ParseFile(path)
	if err != nil || p == nil {
		t.Fatalf("%s: %v %v", name, err, diags)
	}
	return p
}

type options struct {
	workers bool
	cfg     func(*server.Config)
	// model, when set, is the base URL of an OpenAI-compatible server: the bundle then serves
	// the triage pipeline, whose llm step asks it.
	model string
	// specs are more pipelines to serve, by name.
	specs map[string]string
}

// triageSpec holds an urgent ticket's classification for a person.
const triageSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: triage
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: classify
    type: llm
    model: test-model
    prompt: "Classify ticket ${{ inputs.id }}"
    max_reasks: 0
    output:
      schema:
        type: object
        required: [team, priority, summary]
        properties:
          team: {enum: [billing, technical]}
          priority: {enum: [low, urgent]}
          summary: {type: string}
    rules:
      - expr: output.priority != "urgent"
        message: urgent tickets need a person
        on_fail: review
  - id: done
    type: transform
    output: "${{ steps.classify.output.team }}"
`

// reaskSpec lets the model try twice; its rule's message is hostile markup, shown as text.
const reaskSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: reasks
inputs: {type: object, required: [id], properties: {id: {type: string}}}
steps:
  - id: classify
    type: llm
    model: test-model
    prompt: "Classify ticket ${{ inputs.id }}"
    max_reasks: 1
    output:
      schema:
        type: object
        required: [team]
        properties:
          team: {enum: [billing, technical]}
    rules:
      - expr: output.team != "technical"
        message: "<img src=x onerror=alert(1)> technical needs a person"
        on_fail: review
`

// setup serves the API over loopback on a real ledger, wired as pipectl serve wires it, with
// an in-process worker when asked.
func setup(t testing.TB, dsn string, o options) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := ledger.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	gates := &steps.Gates{}
	newEngine := func(actor string, v *dsl.Validator, _ operate.Providers) (*engine.Engine, error) {
		return &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Log: log, Owner: engine.CurrentOwner(), Actor: actor,
			LeaseTTL: 5 * time.Second, Version: "test",
			Steps: map[domain.StepType]domain.StepExecutor{domain.StepTransform: steps.Transform{}, domain.StepGate: steps.Gate{Gates: gates}, domain.StepHTTP: steps.NewHTTP(nil),
				domain.StepApproval: steps.Approval{}, domain.StepWait: steps.Wait{}}}, nil
	}
	if o.model != "" {
		stepsOf := newEngine
		provider := llm.NewOpenAI(llm.Config{BaseURL: o.model, APIKey: "test-key"})
		newEngine = func(actor string, v *dsl.Validator, p operate.Providers) (*engine.Engine, error) {
			e, err := stepsOf(actor, v, p)
			if err == nil {
				e.Steps[domain.StepLLM] = steps.LLM{Provider: func(string) (llm.Provider, error) { return provider, nil }, Gates: gates}
			}
			return e, err
		}
	}
	ops := &operate.Ops{Store: store, Validator: v, NewEngine: newEngine, ForbidSelfApproval: true}
	b := &bundle{t: t, store: store, ops: ops, tokens: map[server.Role]string{}, client: &http.Client{Timeout: 30 * time.Second}}
	var toks []server.Token
	for _, r := range roles {
		tok, sum, err := server.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		b.tokens[r] = tok
		toks = append(toks, server.Token{Name: string(r) + "-1", Role: r, SHA256: sum})
	}
	cfg := server.Config{Ops: ops, PipelineDir: dir, Tokens: toks, Log: log, Ready: store.Ping, MaxBody: 4096, EventPoll: 20 * time.Millisecond,
		FailedAuthBurst: 1000, FailedAuthRate: 1000,
		Pipelines: map[string]*domain.Pipeline{"orders": parse(t, v, dir, "orders", ordersSpec), "waiter": parse(t, v, dir, "waiter", waitSpec),
			"mapped": parse(t, v, dir, "mapped", mappedSpec)},
		Secret: func(name string) (string, bool) {
			if name == "ORDERS_HOOK_SECRET" {
				return hookSecret, true
			}
			return "", false
		}}
	if o.model != "" {
		cfg.Pipelines["triage"] = parse(t, v, dir, "triage", triageSpec)
		cfg.Pipelines["reasks"] = parse(t, v, dir, "reasks", reaskSpec)
	}
	for name, src := range o.specs {
		cfg.Pipelines[name] = parse(t, v, dir, name, src)
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = srv
	hs := httptest.NewServer(srv.Handler())
	b.url = hs.URL
	var wg sync.WaitGroup
	if o.workers {
		eng, _ := newEngine("worker", v, nil)
		w := &worker.Worker{Queue: store, Owner: eng.Owner.String(), LeaseTTL: eng.LeaseTTL, Concurrency: 2, Poll: 20 * time.Millisecond, Log: log,
			Run: func(ctx context.Context, r *domain.Run) error {
				p, err := ops.Spec(r)
				if err != nil {
					return err
				}
				in, err := operate.StoredInput(p, r)
				if err != nil {
					return err
				}
				_, err = eng.Continue(ctx, p, r, in, engine.RunOptions{})
				return err
			}}
		wg.Add(1)
		go func() { defer wg.Done(); w.Serve(ctx, time.Second) }()
	}
	t.Cleanup(func() {
		srv.Stop()
		hs.Close()
		cancel()
		wg.Wait()
		store.Close()
	})
	return b
}

// do sends a request with a role's token ("" for none) and returns the status and body.
func (b *bundle) do(method, path string, role server.Role, body string, headers ...string) (int, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.url+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if role != "" {
		tok, ok := b.tokens[role]
		if !ok {
			tok = string(role) // a literal (wrong) token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// counts is every row the ledger holds, table by table: a refused request must not change it.
func (b *bundle) counts() string {
	b.t.Helper()
	var parts []string
	for _, table := range []string{"runs", "run_events", "step_attempts", "notes", "reviews", "pipeline_switch_log"} {
		var n int
		if err := b.store.DB().Get(&n, "SELECT count(*) FROM "+table); err != nil {
			b.t.Fatal(err)
		}
		parts = append(parts, table+"="+strconv.Itoa(n))
	}
	return strings.Join(parts, " ")
}

func decodeJSON(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
}

type createdRun struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	IdempotencyKey string `json:"idempotency_key"`
}

type problem struct {
	Type   string           `json:"type"`
	Status int              `json:"status"`
	Detail string           `json:"detail"`
	Errors []map[string]any `json:"errors"`
}

// submit creates an orders run as the operator.
func (b *bundle) submit(id string, qty int) createdRun {
	b.t.Helper()
	code, body := b.do("POST", "/api/v1/pipelines/orders/runs", server.RoleOperator, `{"id": "`+id+`", "qty": `+strconv.Itoa(qty)+`}`)
	if code != http.StatusCreated {
		b.t.Fatalf("submit: %d %s", code, body)
	}
	var r createdRun
	decodeJSON(b.t, body, &r)
	return r
}

// waitState polls the ledger until a run reaches a state.
func (b *bundle) waitState(id string, want domain.RunState) *domain.Run {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := b.store.GetRun(context.Background(), id)
		if err != nil {
			b.t.Fatal(err)
		}
		if r.State == want {
			return r
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("run %s is %s, want %s", id, r.State, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
