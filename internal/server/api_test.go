package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/operate"
	"github.com/pipectl/pipectl/internal/server"
)

// pausedOrder makes a run that waits in needs_review, submitted by the operator token and
// executed in process.
func (b *bundle) pausedOrder(id string) string {
	b.t.Helper()
	r := b.submit(id, 20)
	run, err := b.store.GetRun(context.Background(), r.ID)
	if err != nil {
		b.t.Fatal(err)
	}
	// Claim and execute it here, as a worker would.
	eng, _ := b.ops.Engine("worker", nil)
	claimed, err := b.store.ClaimNext(context.Background(), eng.Owner.String(), run.CreatedAt.Add(1e12), domain.ClaimFilter{})
	if err != nil || claimed == nil {
		b.t.Fatalf("claim: %v", err)
	}
	p, _ := b.ops.Spec(claimed)
	in, _ := operate.StoredInput(p, claimed)
	if _, err := eng.Continue(context.Background(), p, claimed, in, domainRunOptions()); err != nil {
		b.t.Fatal(err)
	}
	b.waitState(r.ID, domain.StateNeedsReview)
	return r.ID
}

// Every route and every role: a role below the route's is refused with 403, no token or a
// wrong one with 401, and a refusal records nothing.
func TestRolesOnEveryRoute(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			review := b.pausedOrder("r-1")
			dead := b.pausedOrder("r-2")
			if code, body := b.do("POST", "/api/v1/runs/"+dead+"/review", server.RoleReviewer, `{"decision": "reject"}`); code != 200 {
				t.Fatalf("reject: %d %s", code, body)
			}
			routes := []struct {
				method, path, body string
				allowed            []server.Role
			}{
				{"GET", "/api/v1/pipelines", "", roles},
				{"POST", "/api/v1/pipelines/orders/runs", `{"id": "n-1", "qty": 1}`, []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"POST", "/api/v1/pipelines/orders/disable", `{"reason": "test"}`, []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"POST", "/api/v1/pipelines/orders/enable", `{}`, []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"GET", "/api/v1/runs", "", roles},
				{"GET", "/api/v1/runs/" + review, "", roles},
				{"POST", "/api/v1/runs/" + review + "/review", `{"decision": "reject"}`, []server.Role{server.RoleReviewer, server.RoleAdmin}},
				{"POST", "/api/v1/runs/" + review + "/signal", `{"step": "x", "data": {}}`, []server.Role{server.RoleReviewer, server.RoleAdmin}},
				{"POST", "/api/v1/runs/" + dead + "/redrive", "", []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"POST", "/api/v1/runs/" + dead + "/replay", `{}`, []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"POST", "/api/v1/runs/" + review + "/notes", `{"text": "hello"}`, []server.Role{server.RoleOperator, server.RoleAdmin}},
				{"GET", "/api/v1/dlq", "", roles},
				{"GET", "/api/v1/stats", "", roles},
			}
			covered := map[string]bool{}
			for _, rt := range routes {
				covered[rt.method+" "+pattern(rt.path)] = true
				for _, role := range append([]server.Role{"", "pct_wrong"}, roles...) {
					allowed := false
					for _, a := range rt.allowed {
						allowed = allowed || a == role
					}
					if allowed {
						continue // the allowed calls are exercised below and in the other tests
					}
					before := b.counts()
					code, body := b.do(rt.method, rt.path, role, rt.body)
					want := http.StatusForbidden
					if role == "" || role == "pct_wrong" {
						want = http.StatusUnauthorized
					}
					if code != want || !strings.Contains(string(body), `"type":"https://pipectl.dev/problems/`) {
						t.Errorf("%s %s as %q: %d %s, want %d", rt.method, rt.path, role, code, body, want)
					}
					if after := b.counts(); after != before {
						t.Errorf("%s %s as %q recorded something: %s -> %s", rt.method, rt.path, role, before, after)
					}
				}
			}
			// Each route once with the lowest role allowed: nothing refuses it for its role.
			for _, rt := range routes {
				code, body := b.do(rt.method, rt.path, rt.allowed[0], rt.body)
				if code == 401 || code == 403 || code >= 500 {
					t.Errorf("%s %s as %s: %d %s", rt.method, rt.path, rt.allowed[0], code, body)
				}
			}
			for _, r := range b.srv.Routes() {
				m, p, _ := strings.Cut(r, " ")
				if strings.HasPrefix(p, "/api/v1/") && p != "/api/v1/openapi.json" && p != "/api/v1/runs/{id}/events" && !covered[m+" "+p] {
					t.Errorf("route %s has no role test", r)
				}
			}
			// The actor of every action is the token's name.
			full, _, err := b.ops.Show(context.Background(), review)
			if err != nil {
				t.Fatal(err)
			}
			if len(full.Notes) != 1 || full.Notes[0].Actor != "operator-1" {
				t.Errorf("notes %+v", full.Notes)
			}
			if full.Events[0].Actor != "operator-1" {
				t.Errorf("created by %s", full.Events[0].Actor)
			}
		})
	}
}

// pattern turns a concrete test path back into its route pattern.
func pattern(path string) string {
	parts := strings.Split(path, "/")
	if len(parts) > 4 && parts[3] == "runs" {
		parts[4] = "{id}"
	}
	if len(parts) > 4 && parts[3] == "pipelines" {
		parts[4] = "{name}"
	}
	return strings.Join(parts, "/")
}

func TestSubmitStatuses(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			path := "/api/v1/pipelines/orders/runs"
			code, first := b.do("POST", path, server.RoleOperator, `{"id": "a", "qty": 1}`, "Idempotency-Key", "order-a")
			var r1 createdRun
			decodeJSON(t, first, &r1)
			if code != 201 || r1.State != "queued" || r1.IdempotencyKey != "key:order-a" {
				t.Fatalf("new: %d %s", code, first)
			}
			code, second := b.do("POST", path, server.RoleOperator, `{"qty": 1, "id": "a"}`, "Idempotency-Key", "order-a")
			var r2 createdRun
			decodeJSON(t, second, &r2)
			if code != 200 || r2.ID != r1.ID || string(second) != string(first) {
				t.Fatalf("duplicate: %d %s, first answer %s", code, second, first)
			}
			// Without a header, the key is the hash of the input: the same input is the same run.
			_, noKey := b.do("POST", path, server.RoleOperator, `{"id": "b", "qty": 2}`)
			code, noKeyAgain := b.do("POST", path, server.RoleOperator, `{"id": "b", "qty": 2}`)
			var k1, k2 createdRun
			decodeJSON(t, noKey, &k1)
			decodeJSON(t, noKeyAgain, &k2)
			if code != 200 || k1.ID != k2.ID || !strings.HasPrefix(k1.IdempotencyKey, "sha256:") {
				t.Fatalf("hash key: %d %s %s", code, noKey, noKeyAgain)
			}
			before := b.counts()
			for _, tc := range []struct {
				name, pipeline, body string
				headers              []string
				status               int
				kind, detail         string
			}{
				{"key reused with another input", "orders", `{"id": "a", "qty": 2}`, []string{"Idempotency-Key", "order-a"}, 409, "idempotency-conflict", "with a different input"},
				{"schema errors", "orders", `{"id": 7, "qty": 0, "extra": true}`, nil, 422, "input-schema", "input does not match orders's inputs schema"},
				{"not JSON", "orders", `{"id": `, nil, 400, "invalid", "input is not JSON"},
				{"too large", "orders", `{"id": "` + strings.Repeat("x", 5000) + `", "qty": 1}`, nil, 413, "too-large", "exceeds 4096 bytes"},
				{"bad key", "orders", `{"id": "c", "qty": 1}`, []string{"Idempotency-Key", "two words"}, 400, "invalid", "Idempotency-Key"},
				{"unknown pipeline", "nope", `{}`, nil, 404, "not-found", "no pipeline nope"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					code, body := b.do("POST", "/api/v1/pipelines/"+tc.pipeline+"/runs", server.RoleOperator, tc.body, tc.headers...)
					var p problem
					decodeJSON(t, body, &p)
					if code != tc.status || p.Status != tc.status || !strings.HasSuffix(p.Type, "/"+tc.kind) || !strings.Contains(p.Detail, tc.detail) {
						t.Fatalf("%d %s", code, body)
					}
					if tc.status == 422 && len(p.Errors) != 3 {
						t.Fatalf("want every schema error listed: %s", body)
					}
				})
			}
			if after := b.counts(); after != before {
				t.Fatalf("refused submissions recorded something: %s -> %s", before, after)
			}
			// The kill switch: 423 with the reason, recorded once by the operator.
			if code, body := b.do("POST", "/api/v1/pipelines/orders/disable", server.RoleOperator, `{"reason": "supplier down"}`); code != 200 {
				t.Fatalf("disable: %d %s", code, body)
			}
			code, body := b.do("POST", path, server.RoleOperator, `{"id": "d", "qty": 1}`)
			if code != 423 || !strings.Contains(string(body), "supplier down, by operator-1") {
				t.Fatalf("disabled: %d %s", code, body)
			}
			if code, body := b.do("POST", "/api/v1/pipelines/orders/disable", server.RoleOperator, `{}`); code != 400 || !strings.Contains(string(body), "reason is required") {
				t.Fatalf("disable without reason: %d %s", code, body)
			}
			code, body = b.do("GET", "/api/v1/pipelines", server.RoleViewer, "")
			if code != 200 || !strings.Contains(string(body), `"enabled": false`) || !strings.Contains(string(body), `"webhook": true`) {
				t.Fatalf("pipelines: %d %s", code, body)
			}
		})
	}
}

// An approval through the API names the proposal it was shown; a stale or missing hash is
// refused, and so is approving a run one submitted oneself.
func TestReviewBoundToProposalHash(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{workers: true})
			r := b.submit("big", 50)
			b.waitState(r.ID, domain.StateNeedsReview)
			code, body := b.do("GET", "/api/v1/runs/"+r.ID, server.RoleViewer, "")
			var doc operate.RunDoc
			decodeJSON(t, body, &doc)
			var held struct {
				Hash     string         `json:"proposal_hash"`
				Proposal map[string]any `json:"proposal"`
			}
			for _, a := range doc.Attempts {
				if a.Outcome == domain.OutcomeNeedsReview {
					json.Unmarshal(a.Output, &held)
				}
			}
			if code != 200 || len(held.Hash) != 64 || string(doc.Run.Input) == "" {
				t.Fatalf("run document: %d %s", code, body)
			}
			before := b.counts()
			for _, tc := range []struct {
				role   server.Role
				body   string
				status int
				detail string
			}{
				{server.RoleReviewer, `{"decision": "approve"}`, 400, "needs proposal_hash"},
				{server.RoleReviewer, `{"decision": "approve", "proposal_hash": "` + strings.Repeat("0", 64) + `"}`, 409, "holds proposal"},
				{server.RoleReviewer, `{"decision": "maybe"}`, 400, `decision must be`},
				{server.RoleReviewer, `{"decision": "approve", "extra": 1}`, 400, `unknown field`},
				{server.RoleOperator, `{"decision": "approve", "proposal_hash": "` + held.Hash + `"}`, 403, "may not review"},
			} {
				code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/review", tc.role, tc.body)
				if code != tc.status || !strings.Contains(string(body), tc.detail) {
					t.Fatalf("%s: %d %s", tc.body, code, body)
				}
			}
			if after := b.counts(); after != before {
				t.Fatalf("refused reviews recorded something: %s -> %s", before, after)
			}
			code, body = b.do("POST", "/api/v1/runs/"+r.ID+"/review", server.RoleReviewer, `{"decision": "approve", "proposal_hash": "`+held.Hash+`", "note": "checked stock"}`)
			if code != 200 || !strings.Contains(string(body), `"decision": "approved"`) || !strings.Contains(string(body), `"by": "reviewer-1"`) {
				t.Fatalf("approve: %d %s", code, body)
			}
			done := b.waitState(r.ID, domain.StateSucceeded)
			full, _, _ := b.ops.Show(context.Background(), done.ID)
			found := false
			for _, e := range full.Events {
				found = found || (e.Actor == "reviewer-1" && strings.Contains(e.Reason, held.Hash) && strings.Contains(e.Reason, "checked stock"))
			}
			if !found {
				t.Fatalf("no approval event naming the proposal: %+v", full.Events)
			}
			code, body = b.do("POST", "/api/v1/runs/"+r.ID+"/review", server.RoleReviewer, `{"decision": "approve", "proposal_hash": "`+held.Hash+`"}`)
			if code != 409 || !strings.Contains(string(body), "is succeeded, not needs_review; nothing was changed") {
				t.Fatalf("second approval: %d %s", code, body)
			}
		})
	}
}

// Self-approval: an admin who submitted a run may not approve it, unless configured.
func TestSelfApprovalRefused(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{workers: true})
	code, body := b.do("POST", "/api/v1/pipelines/orders/runs", server.RoleAdmin, `{"id": "self", "qty": 99}`)
	var r createdRun
	decodeJSON(t, body, &r)
	if code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	b.waitState(r.ID, domain.StateNeedsReview)
	doc, _, _ := b.ops.Show(context.Background(), r.ID)
	var held struct {
		Hash string `json:"proposal_hash"`
	}
	json.Unmarshal(doc.Attempts[len(doc.Attempts)-1].Output, &held)
	before := b.counts()
	code, body = b.do("POST", "/api/v1/runs/"+r.ID+"/review", server.RoleAdmin, fmt.Sprintf(`{"decision": "approve", "proposal_hash": %q}`, held.Hash))
	if code != 403 || !strings.Contains(string(body), "admin-1 submitted run") {
		t.Fatalf("self approval: %d %s", code, body)
	}
	if after := b.counts(); after != before {
		t.Fatalf("recorded: %s -> %s", before, after)
	}
	// Rejecting one's own run is allowed: it stops work rather than starting it.
	if code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/review", server.RoleAdmin, `{"decision": "reject", "note": "typo"}`); code != 200 {
		t.Fatalf("reject: %d %s", code, body)
	}
}

func TestSignalRedriveReplayNotes(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{workers: true})
			code, body := b.do("POST", "/api/v1/pipelines/waiter/runs", server.RoleOperator, `{"id": "w"}`)
			var r createdRun
			decodeJSON(t, body, &r)
			if code != 201 {
				t.Fatalf("%d %s", code, body)
			}
			b.waitState(r.ID, domain.StateWaitingExternal)
			if code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/signal", server.RoleReviewer, `{"step": "callback", "data": {"ok": "yes"}}`); code != 409 || !strings.Contains(string(body), "keeps waiting") {
				t.Fatalf("bad payload: %d %s", code, body)
			}
			if code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/signal", server.RoleReviewer, `{"step": "callback", "data": {"ok": true}}`); code != 200 {
				t.Fatalf("signal: %d %s", code, body)
			}
			b.waitState(r.ID, domain.StateSucceeded)
			// Reject a review to dead-letter a run, then redrive and replay it.
			big := b.submit("x", 40)
			b.waitState(big.ID, domain.StateNeedsReview)
			b.do("POST", "/api/v1/runs/"+big.ID+"/review", server.RoleReviewer, `{"decision": "reject", "note": "no"}`)
			b.waitState(big.ID, domain.StateFailedPermanent)
			code, body = b.do("GET", "/api/v1/dlq?pipeline=orders", server.RoleViewer, "")
			if code != 200 || !strings.Contains(string(body), big.ID) {
				t.Fatalf("dlq: %d %s", code, body)
			}
			if code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/redrive", server.RoleOperator, ""); code != 409 || !strings.Contains(string(body), "only dead-lettered") {
				t.Fatalf("redrive of a succeeded run: %d %s", code, body)
			}
			code, body = b.do("POST", "/api/v1/runs/"+big.ID+"/replay", server.RoleOperator, `{"llm": "live"}`)
			if code != 201 || !strings.Contains(string(body), `"replay_of": "`+big.ID) {
				t.Fatalf("replay: %d %s", code, body)
			}
			if code, body := b.do("POST", "/api/v1/runs/"+big.ID+"/redrive", server.RoleOperator, ""); code != 200 || !strings.Contains(string(body), `"state": "queued"`) {
				t.Fatalf("redrive: %d %s", code, body)
			}
			b.waitState(big.ID, domain.StateNeedsReview) // the gate holds it again
			if code, body := b.do("POST", "/api/v1/runs/"+big.ID+"/notes", server.RoleOperator, `{"text": "   "}`); code != 400 {
				t.Fatalf("empty note: %d %s", code, body)
			}
			if code, body := b.do("POST", "/api/v1/runs/nosuch/notes", server.RoleOperator, `{"text": "x"}`); code != 404 || !strings.Contains(string(body), "no run nosuch") {
				t.Fatalf("note on nothing: %d %s", code, body)
			}
			code, body = b.do("GET", "/api/v1/stats?since=1h", server.RoleViewer, "")
			if code != 200 || !strings.Contains(string(body), `"pipeline": "orders"`) {
				t.Fatalf("stats: %d %s", code, body)
			}
		})
	}
}

func TestRunsPagination(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			want := map[string]bool{}
			for i := range 7 {
				want[b.submit(fmt.Sprintf("p-%d", i), 1).ID] = true
			}
			seen := map[string]bool{}
			path := "/api/v1/runs?pipeline=orders&limit=3"
			pages := 0
			for {
				code, body := b.do("GET", path, server.RoleViewer, "")
				var page struct {
					Runs []struct {
						ID string `json:"id"`
					} `json:"runs"`
					Next string `json:"next_cursor"`
				}
				decodeJSON(t, body, &page)
				if code != 200 {
					t.Fatalf("%d %s", code, body)
				}
				pages++
				for _, r := range page.Runs {
					if seen[r.ID] {
						t.Fatalf("run %s on two pages", r.ID)
					}
					seen[r.ID] = true
				}
				if page.Next == "" {
					break
				}
				path = "/api/v1/runs?pipeline=orders&limit=3&cursor=" + page.Next
			}
			if pages != 3 || len(seen) != len(want) {
				t.Fatalf("%d pages, %d runs", pages, len(seen))
			}
			for _, q := range []string{"limit=0", "limit=501", "state=nope", "since=yesterday", "cursor=bm90LWEtY3Vyc29y"} {
				if code, body := b.do("GET", "/api/v1/runs?"+q, server.RoleViewer, ""); code != 400 {
					t.Errorf("%s: %d %s", q, code, body)
				}
			}
			if code, body := b.do("GET", "/api/v1/runs?state=queued&since=1h", server.RoleViewer, ""); code != 200 || strings.Count(string(body), `"id"`) != 7 {
				t.Fatalf("filters: %d %s", code, body)
			}
		})
	}
}

func TestFailedAuthIsRateLimited(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{cfg: func(c *server.Config) { c.FailedAuthBurst, c.FailedAuthRate = 3, 0.001 }})
	for i := range 3 {
		if code, _ := b.do("GET", "/api/v1/runs", "pct_guess", ""); code != 401 {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	code, body := b.do("GET", "/api/v1/runs", "pct_guess", "")
	if code != 429 {
		t.Fatalf("after the budget: %d %s", code, body)
	}
	// The address is held back whatever it presents next, until the budget refills.
	if code, _ := b.do("GET", "/api/v1/runs", server.RoleViewer, ""); code != 429 {
		t.Fatalf("a valid token from the same address: %d", code)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{})
	b.submit("m", 1)
	b.do("GET", "/api/v1/runs", "", "")
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := b.do("GET", path, "", ""); code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	_, body := b.do("GET", "/metrics", "", "")
	for _, want := range []string{
		`pipectl_http_requests_total{code="201",route="POST /api/v1/pipelines/{name}/runs"} 1`,
		`pipectl_http_requests_total{code="401",route="GET /api/v1/runs"} 1`,
		`pipectl_http_request_duration_seconds_bucket{route="POST /api/v1/pipelines/{name}/runs"`,
		`pipectl_http_auth_failures_total 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	b.store.Close()
	if code, body := b.do("GET", "/readyz", "", ""); code != 503 {
		t.Fatalf("readyz with the ledger closed: %d %s", code, body)
	}
}
