package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
	"github.com/pipectl/pipectl/internal/server"
)

// browser is a cookie-keeping HTTP client that does not follow redirects, so tests see them.
type browser struct {
	t      testing.TB
	b      *bundle
	client *http.Client
}

func (b *bundle) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: b.t, b: b, client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (br *browser) get(path string) (*http.Response, string) {
	br.t.Helper()
	resp, err := br.client.Get(br.b.url + path)
	if err != nil {
		br.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (br *browser) post(path string, form url.Values, headers ...string) (*http.Response, string) {
	br.t.Helper()
	req, _ := http.NewRequest("POST", br.b.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := br.client.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t testing.TB, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in %s", page)
	}
	return m[1]
}

// signIn trades a role's token for a session and returns the session's CSRF value.
func (br *browser) signIn(role server.Role) string {
	br.t.Helper()
	_, page := br.get("/signin")
	resp, body := br.post("/signin", url.Values{"csrf": {csrfOf(br.t, page)}, "token": {br.b.tokens[role]}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		br.t.Fatalf("sign in as %s: %d %s", role, resp.StatusCode, body)
	}
	_, page = br.get("/")
	return csrfOf(br.t, page)
}

func TestDashboardSignIn(t *testing.T) {
	b := setup(t, ledgers(t)["sqlite"](t), options{})
	br := b.browser()
	// Every page but sign-in sends a stranger to sign in, keeping where they were going.
	resp, _ := br.get("/inbox")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/signin?next=%2Finbox" {
		t.Fatalf("anonymous /inbox: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = br.get("/runs/r-1/events")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("anonymous event stream: %d", resp.StatusCode)
	}
	resp, page := br.get("/signin")
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Fatalf("the page holds inline script or style or names another site:\n%s", page)
	}
	csrf := csrfOf(t, page)
	for _, tc := range []struct {
		name   string
		form   url.Values
		origin string
		status int
		say    string
	}{
		{"wrong token", url.Values{"csrf": {csrf}, "token": {"pct_wrong"}}, "", 401, "not valid"},
		{"no csrf (login CSRF)", url.Values{"token": {b.tokens[server.RoleAdmin]}}, "", 403, "did not come from this dashboard"},
		{"other origin", url.Values{"csrf": {csrf}, "token": {b.tokens[server.RoleAdmin]}}, "http://evil.example", 403, "did not come from this dashboard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.origin != "" {
				h = []string{"Origin", tc.origin}
			}
			resp, body := br.post("/signin", tc.form, h...)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.say) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "pipectl_session" {
					t.Fatal("a refused sign-in set a session")
				}
			}
		})
	}
	// A sign-in lands only on this site's own paths.
	_, page = br.get("/signin")
	resp, _ = br.post("/signin", url.Values{"csrf": {csrfOf(t, page)}, "token": {b.tokens[server.RoleViewer]}, "next": {"//evil.example/x"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("open redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "pipectl_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" {
		t.Fatalf("session cookie %+v", session)
	}
	resp, page = br.get("/")
	if resp.StatusCode != 200 || !strings.Contains(page, "viewer-1") {
		t.Fatalf("runs page: %d %s", resp.StatusCode, page)
	}
	// Sign-out ends the session on the server: the old cookie no longer works.
	resp, _ = br.post("/signout", url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	replay := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", b.url+"/", nil)
	req.AddCookie(session)
	r2, err := replay.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusSeeOther {
		t.Fatalf("the signed-out cookie still opens pages: %d", r2.StatusCode)
	}
}

// Forged and unauthorized review posts are refused before anything is recorded; a decision
// bound to a proposal that is not the held one is refused with a clear message.
func TestDashboardReviewRefusals(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			id := b.pausedOrder("r-1")
			full, _, err := b.ops.Show(context.Background(), id)
			if err != nil || full.Held == nil || full.Held.ProposalHash == "" {
				t.Fatalf("held: %v %+v", err, full)
			}
			hash := full.Held.ProposalHash
			viewer, reviewer := b.browser(), b.browser()
			vcsrf, rcsrf := viewer.signIn(server.RoleViewer), reviewer.signIn(server.RoleReviewer)
			// What each role is shown.
			_, vpage := viewer.get("/inbox")
			_, rpage := reviewer.get("/inbox")
			if !strings.Contains(vpage, id) || strings.Contains(vpage, "Approve") || strings.Contains(vpage, "/review") {
				t.Fatalf("viewer's inbox:\n%s", vpage)
			}
			if !strings.Contains(rpage, `value="`+hash+`"`) || !strings.Contains(rpage, ">Approve<") {
				t.Fatalf("reviewer's inbox:\n%s", rpage)
			}
			path := "/runs/" + id + "/review"
			before := b.counts()
			for _, tc := range []struct {
				name    string
				br      *browser
				form    url.Values
				headers []string
				status  int
				say     string
			}{
				{"no csrf", reviewer, url.Values{"decision": {"approve"}, "proposal_hash": {hash}}, nil, 403, "CSRF"},
				{"wrong csrf", reviewer, url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {vcsrf}}, nil, 403, "CSRF"},
				{"other origin", reviewer, url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {rcsrf}}, []string{"Origin", "http://evil.example"}, 403, "CSRF"},
				{"no session", b.browser(), url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {rcsrf}}, nil, 401, "not signed in"},
				{"viewer", viewer, url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {vcsrf}}, nil, 403, "role viewer, which may not review"},
				{"changed proposal", reviewer, url.Values{"decision": {"approve"}, "proposal_hash": {strings.Repeat("0", 64)}, "csrf": {rcsrf}}, nil, 409, "changed since the page"},
				{"no proposal hash", reviewer, url.Values{"decision": {"approve"}, "csrf": {rcsrf}}, nil, 400, "needs proposal_hash"},
				{"bad decision", reviewer, url.Values{"decision": {"maybe"}, "proposal_hash": {hash}, "csrf": {rcsrf}}, nil, 400, "decision must be"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := tc.br.post(path, tc.form, tc.headers...)
					if resp.StatusCode != tc.status || !strings.Contains(body, tc.say) {
						t.Fatalf("%d %s", resp.StatusCode, body)
					}
					if after := b.counts(); after != before {
						t.Fatalf("recorded something: %s -> %s", before, after)
					}
				})
			}
			resp, body := reviewer.post(path, url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {rcsrf}, "note": {"ok by me"}})
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/runs/"+id {
				t.Fatalf("approve: %d %s", resp.StatusCode, body)
			}
			run := b.waitState(id, domain.StateProcessing) // handed to workers; none runs in this test
			events, _ := b.store.Events(context.Background(), run.ID)
			if last := events[len(events)-1]; last.Actor != "reviewer-1" {
				t.Fatalf("decided by %q", last.Actor)
			}
			// The same form again: the run no longer holds anything.
			resp, body = reviewer.post(path, url.Values{"decision": {"approve"}, "proposal_hash": {hash}, "csrf": {rcsrf}})
			if resp.StatusCode != http.StatusConflict {
				t.Fatalf("second approval: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// Untrusted text is escaped everywhere it is shown; filters that name no state are refused
// with a message, not a crash.
func TestDashboardEscapesAndFilters(t *testing.T) {
	b := setup(t, ledgers(t)["sqlite"](t), options{})
	id := b.pausedOrder(`<script>alert(1)</script>`)
	br := b.browser()
	br.signIn(server.RoleAdmin)
	for _, path := range []string{"/", "/runs/" + id, "/inbox"} {
		resp, page := br.get(path)
		if resp.StatusCode != 200 || strings.Contains(page, "<script>alert") || (path != "/" && !strings.Contains(page, `&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;`)) {
			t.Fatalf("%s: %d\n%s", path, resp.StatusCode, page)
		}
	}
	resp, page := br.get("/?state=" + url.QueryEscape(`"><b>x`))
	if resp.StatusCode != 400 || !strings.Contains(page, "unknown state") || strings.Contains(page, "<b>x") {
		t.Fatalf("bad state: %d %s", resp.StatusCode, page)
	}
	resp, page = br.get("/?state=needs_review&pipeline=orders")
	if resp.StatusCode != 200 || !strings.Contains(page, id[:8]) {
		t.Fatalf("filter: %d %s", resp.StatusCode, page)
	}
	resp, page = br.get("/?state=succeeded")
	if resp.StatusCode != 200 || strings.Contains(page, id) || !strings.Contains(page, "No runs match") {
		t.Fatalf("filter succeeded: %d %s", resp.StatusCode, page)
	}
	resp, page = br.get("/?since=forever")
	if resp.StatusCode != 400 || !strings.Contains(page, "since must be") {
		t.Fatalf("bad since: %d %s", resp.StatusCode, page)
	}
	resp, page = br.get("/?since=1h&pipeline=orders")
	if resp.StatusCode != 200 || !strings.Contains(page, id[:8]) {
		t.Fatalf("since 1h: %d %s", resp.StatusCode, page)
	}
	resp, page = br.get("/?since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)))
	if resp.StatusCode != 200 || strings.Contains(page, id) {
		t.Fatalf("since the future: %d %s", resp.StatusCode, page)
	}
	resp, _ = br.get("/runs/nope")
	if resp.StatusCode != 404 {
		t.Fatalf("missing run: %d", resp.StatusCode)
	}
	resp, _ = br.get("/assets/app.js")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// The dead-letter queue and the kill switch: only operators and admins may act, a kill switch
// needs a reason, and each refusal records nothing.
func TestDashboardOperatorForms(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{})
			dead := b.pausedOrder("d-1")
			if code, body := b.do("POST", "/api/v1/runs/"+dead+"/review", server.RoleReviewer, `{"decision": "reject"}`); code != 200 {
				t.Fatalf("reject: %d %s", code, body)
			}
			held := b.pausedOrder("h-1")
			viewer, reviewer, operator := b.browser(), b.browser(), b.browser()
			vcsrf, rcsrf, ocsrf := viewer.signIn(server.RoleViewer), reviewer.signIn(server.RoleReviewer), operator.signIn(server.RoleOperator)
			for _, path := range []string{"/dlq", "/pipelines"} {
				_, page := viewer.get(path)
				if strings.Count(page, "<button") != 1 || strings.Contains(page, `name="run"`) { // sign-out only
					t.Fatalf("viewer's %s shows buttons:\n%s", path, page)
				}
			}
			_, page := operator.get("/dlq")
			if !strings.Contains(page, `name="run" value="`+dead+`"`) || strings.Contains(page, held) {
				t.Fatalf("operator's dead letters:\n%s", page)
			}
			_, page = operator.get("/inbox")
			if strings.Contains(page, ">Approve<") {
				t.Fatal("an operator is offered Approve")
			}
			before := b.counts()
			for _, tc := range []struct {
				name   string
				br     *browser
				path   string
				form   url.Values
				status int
				say    string
			}{
				{"viewer redrives", viewer, "/dlq/redrive", url.Values{"csrf": {vcsrf}, "run": {dead}}, 403, "may not operate"},
				{"reviewer redrives", reviewer, "/dlq/redrive", url.Values{"csrf": {rcsrf}, "run": {dead}}, 403, "may not operate"},
				{"redrive without csrf", operator, "/dlq/redrive", url.Values{"run": {dead}}, 403, "CSRF"},
				{"redrive nothing", operator, "/dlq/redrive", url.Values{"csrf": {ocsrf}}, 400, "no run was chosen"},
				{"redrive a held run", operator, "/dlq/redrive", url.Values{"csrf": {ocsrf}, "run": {held}}, 409, "only dead-lettered"},
				{"viewer disables", viewer, "/pipelines/orders/disable", url.Values{"csrf": {vcsrf}, "reason": {"x"}}, 403, "may not operate"},
				{"disable without reason", operator, "/pipelines/orders/disable", url.Values{"csrf": {ocsrf}, "reason": {"  "}}, 400, "reason is required"},
				{"unknown pipeline", operator, "/pipelines/nope/disable", url.Values{"csrf": {ocsrf}, "reason": {"x"}}, 404, "no pipeline nope"},
				{"unknown action", operator, "/pipelines/orders/explode", url.Values{"csrf": {ocsrf}, "reason": {"x"}}, 404, "disabled or enabled"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp, body := tc.br.post(tc.path, tc.form)
					if resp.StatusCode != tc.status || !strings.Contains(body, tc.say) {
						t.Fatalf("%d %s", resp.StatusCode, body)
					}
					if after := b.counts(); after != before {
						t.Fatalf("recorded something: %s -> %s", before, after)
					}
				})
			}
			_, page = operator.get("/runs/" + dead)
			if !strings.Contains(page, `id="redrive-run"`) || !strings.Contains(page, `id="add-note"`) {
				t.Fatalf("operator's dead run page:\n%s", page)
			}
			_, page = viewer.get("/runs/" + dead)
			if strings.Contains(page, `id="redrive-run"`) || strings.Contains(page, `id="add-note"`) {
				t.Fatal("a viewer is offered redrive or notes")
			}
			if resp, body := reviewer.post("/runs/"+dead+"/notes", url.Values{"csrf": {rcsrf}, "text": {"x"}}); resp.StatusCode != 403 {
				t.Fatalf("reviewer's note: %d %s", resp.StatusCode, body)
			}
			if after := b.counts(); after != before {
				t.Fatalf("recorded something: %s -> %s", before, after)
			}
			if resp, body := operator.post("/runs/"+dead+"/notes", url.Values{"csrf": {ocsrf}, "text": {"<i>supplier</i> fixed"}}); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("note: %d %s", resp.StatusCode, body)
			}
			if _, page = viewer.get("/runs/" + dead); !strings.Contains(page, "operator-1: &lt;i&gt;supplier&lt;/i&gt; fixed") {
				t.Fatalf("the note is not shown escaped:\n%s", page)
			}
			// Replay from the page: refused for a reviewer, an unknown step or model mode, then made.
			if _, page = operator.get("/runs/" + dead); !strings.Contains(page, `id="replay-run"`) || !strings.Contains(page, `<option value="check">`) {
				t.Fatal("no replay form for the operator")
			}
			if _, page = viewer.get("/runs/" + dead); strings.Contains(page, `id="replay-run"`) {
				t.Fatal("a replay form for a viewer")
			}
			if resp, body := reviewer.post("/runs/"+dead+"/replay", url.Values{"csrf": {rcsrf}, "from": {"check"}}); resp.StatusCode != 403 {
				t.Fatalf("reviewer's replay: %d %s", resp.StatusCode, body)
			}
			if resp, body := operator.post("/runs/"+dead+"/replay", url.Values{"csrf": {ocsrf}, "from": {"nope"}}); resp.StatusCode != 400 || !strings.Contains(body, "no such step") {
				t.Fatalf("replay from an unknown step: %d %s", resp.StatusCode, body)
			}
			if resp, body := operator.post("/runs/"+dead+"/replay", url.Values{"csrf": {ocsrf}, "from": {"check"}, "llm": {"sometimes"}}); resp.StatusCode != 400 || !strings.Contains(body, "recorded or live") {
				t.Fatalf("replay with a bad llm: %d %s", resp.StatusCode, body)
			}
			resp, body := operator.post("/runs/"+dead+"/replay", url.Values{"csrf": {ocsrf}, "from": {"check"}, "llm": {"recorded"}})
			replayID := strings.TrimPrefix(resp.Header.Get("Location"), "/runs/")
			if resp.StatusCode != http.StatusSeeOther || replayID == "" || replayID == dead {
				t.Fatalf("replay: %d %s", resp.StatusCode, body)
			}
			if r, err := b.store.GetRun(context.Background(), replayID); err != nil || r.ReplayOf != dead {
				t.Fatalf("the replay %s: %+v %v", replayID, r, err)
			}
			before = b.counts()
			// One dead run and one held: the dead one goes, the other is reported.
			resp, body = operator.post("/dlq/redrive", url.Values{"csrf": {ocsrf}, "run": {dead, held}})
			if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "redriven: "+dead) || !strings.Contains(body, "not redriven: run "+held) {
				t.Fatalf("redrive: %d %s", resp.StatusCode, body)
			}
			b.waitState(dead, domain.StateQueued)
			resp, body = operator.post("/pipelines/orders/disable", url.Values{"csrf": {ocsrf}, "reason": {"supplier <b>down</b>"}})
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("disable: %d %s", resp.StatusCode, body)
			}
			if code, body := b.do("POST", "/api/v1/pipelines/orders/runs", server.RoleOperator, `{"id": "x", "qty": 1}`); code != 423 {
				t.Fatalf("submit to a disabled pipeline: %d %s", code, body)
			}
			_, page = viewer.get("/pipelines")
			if !strings.Contains(page, "by operator-1") || !strings.Contains(page, "supplier &lt;b&gt;down&lt;/b&gt;") {
				t.Fatalf("pipelines page:\n%s", page)
			}
			if resp, body := operator.post("/pipelines/orders/enable", url.Values{"csrf": {ocsrf}}); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("enable: %d %s", resp.StatusCode, body)
			}
			if code, body := b.do("POST", "/api/v1/pipelines/orders/runs", server.RoleOperator, `{"id": "x", "qty": 1}`); code != 201 {
				t.Fatalf("submit after enabling: %d %s", code, body)
			}
		})
	}
}

// A wait step's schema becomes a form: a reviewer sends the signal and the run continues; a
// viewer gets no form, and a signal for another step is refused.
func TestDashboardSignalForm(t *testing.T) {
	b := setup(t, ledgers(t)["sqlite"](t), options{workers: true})
	code, body := b.do("POST", "/api/v1/pipelines/waiter/runs", server.RoleOperator, `{"id": "w-1"}`)
	if code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	var r createdRun
	decodeJSON(t, body, &r)
	b.waitState(r.ID, domain.StateWaitingExternal)
	viewer, reviewer := b.browser(), b.browser()
	vcsrf, rcsrf := viewer.signIn(server.RoleViewer), reviewer.signIn(server.RoleReviewer)
	_, page := reviewer.get("/runs/" + r.ID)
	if !strings.Contains(page, `name="f.ok"`) || !strings.Contains(page, `name="step" value="callback"`) {
		t.Fatalf("reviewer's page has no signal form:\n%s", page)
	}
	if _, page = viewer.get("/runs/" + r.ID); strings.Contains(page, `name="f.ok"`) {
		t.Fatal("a viewer is offered the signal form")
	}
	before := b.counts()
	for _, tc := range []struct {
		name   string
		br     *browser
		form   url.Values
		status int
		say    string
	}{
		{"viewer", viewer, url.Values{"csrf": {vcsrf}, "step": {"callback"}, "f.ok": {"true"}}, 403, "may not review"},
		{"no csrf", reviewer, url.Values{"step": {"callback"}, "f.ok": {"true"}}, 403, "CSRF"},
		{"another step", reviewer, url.Values{"csrf": {rcsrf}, "step": {"other"}, "f.ok": {"true"}}, 409, "does not wait on step"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.br.post("/runs/"+r.ID+"/signal", tc.form)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.say) {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if after := b.counts(); after != before {
				t.Fatalf("recorded something: %s -> %s", before, after)
			}
		})
	}
	resp, sig := reviewer.post("/runs/"+r.ID+"/signal", url.Values{"csrf": {rcsrf}, "step": {"callback"}, "f.ok": {"true"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("signal: %d %s", resp.StatusCode, sig)
	}
	b.waitState(r.ID, domain.StateSucceeded)
	full, _, err := b.ops.Show(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range full.Attempts {
		found = found || (a.Step == "callback" && strings.Contains(string(a.Output), `"ok":true`))
	}
	if !found {
		t.Fatalf("the signal's payload is not the step's output: %+v", full.Attempts)
	}
}

// A run's page shows the gate's verdict per rule and per path for every model call: the
// rejected first answer (a re-ask followed) and the accepted second, with hostile text in the
// rule's message and in the gate's reason escaped.
func TestDashboardCallVerdicts(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			model := llmtest.New()
			defer model.Close()
			model.Push(llmtest.Answer(`{"team": "<script>alert(2)</script>"}`), llmtest.Answer(`{"team": "billing"}`))
			b := setup(t, dsn(t), options{workers: true, model: model.BaseURL()})
			code, body := b.do("POST", "/api/v1/pipelines/reasks/runs", server.RoleOperator, `{"id": "R-1"}`)
			if code != 201 {
				t.Fatalf("submit: %d %s", code, body)
			}
			var run createdRun
			decodeJSON(t, body, &run)
			b.waitState(run.ID, domain.StateSucceeded)
			br := b.browser()
			br.signIn(server.RoleViewer)
			resp, page := br.get("/runs/" + run.ID)
			if resp.StatusCode != 200 {
				t.Fatalf("run page: %d %s", resp.StatusCode, page)
			}
			if strings.Contains(page, "<script>alert") || strings.Contains(page, "<img src=x") {
				t.Fatalf("hostile text reached the page unescaped:\n%s", page)
			}
			calls := strings.Split(page, `<details class="call"`)
			if len(calls) != 3 {
				t.Fatalf("want 2 model calls on the page, got %d:\n%s", len(calls)-1, page)
			}
			rejected, accepted := calls[1], calls[2]
			rule := `<td><code>output.team != &#34;technical&#34;</code></td><td>&lt;img src=x onerror=alert(1)&gt; technical needs a person</td><td>review</td>`
			for _, want := range []string{
				"verdict-reject",
				rule + `<td><span class="verdict verdict-not-checked">not checked</span>`,
				`<table class="reasons">`,
				`<td><code>/team</code></td><td>schema: enum</td>`,
				`&lt;script&gt;`,
			} {
				if !strings.Contains(rejected, want) {
					t.Errorf("the rejected call lacks %q:\n%s", want, rejected)
				}
			}
			for _, want := range []string{
				"re-ask 1",
				"verdict-pass",
				rule + `<td><span class="verdict verdict-passed">passed</span>`,
				"The gate gave no reasons",
			} {
				if !strings.Contains(accepted, want) {
					t.Errorf("the accepted call lacks %q:\n%s", want, accepted)
				}
			}
			if strings.Contains(page, `<h3>Gate reasons</h3><pre>`) {
				t.Errorf("reasons shown as raw JSON:\n%s", page)
			}
		})
	}
}

// A secret never reaches a run's page: an http step sends it in headers and the target echoes
// it back, so both the request and the output carry it; the ledger stores *** and the page
// shows ***, never the value or an encoded form of it.
func TestDashboardHidesSecrets(t *testing.T) {
	const secret = "tok-S3cret/Value+x"
	var echoed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		echoed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"auth": r.Header.Get("Authorization"), "key": r.Header.Get("X-Key"), "query": r.URL.RawQuery})
	}))
	defer target.Close()
	spec := `apiVersion: pipectl/v1
kind: Pipeline
name: secrethdr
inputs: {type: object}
secrets: [API_TOKEN]
steps:
  - id: call
    type: http
    method: POST
    url: ` + target.URL + `/echo?token=${{ secrets.API_TOKEN }}
    headers: {Authorization: "Bearer ${{ secrets.API_TOKEN }}", X-Key: "${{ secrets.API_TOKEN }}"}
    body: {hello: world}
`
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{specs: map[string]string{"secrethdr": spec}})
			b.ops.Secrets = func(p *domain.Pipeline) (map[string]string, error) {
				return map[string]string{"API_TOKEN": secret}, nil
			}
			code, body := b.do("POST", "/api/v1/pipelines/secrethdr/runs", server.RoleOperator, `{}`)
			if code != 201 {
				t.Fatalf("submit: %d %s", code, body)
			}
			var created createdRun
			decodeJSON(t, body, &created)
			// Claim and execute it here as a worker would, through the operations layer that
			// resolves the pipeline's secrets.
			run, _ := b.store.GetRun(context.Background(), created.ID)
			eng, _ := b.ops.Engine("worker", nil)
			claimed, err := b.store.ClaimNext(context.Background(), eng.Owner.String(), run.CreatedAt.Add(time.Hour), domain.ClaimFilter{})
			if err != nil || claimed == nil || claimed.ID != created.ID {
				t.Fatalf("claim: %+v %v", claimed, err)
			}
			before := echoed.Load()
			final, err := b.ops.Continue(context.Background(), "worker", claimed)
			if err != nil || final.State != domain.StateSucceeded || echoed.Load() != before+1 {
				t.Fatalf("run: %v (target asked %d times): %+v", err, echoed.Load()-before, final)
			}
			br := b.browser()
			br.signIn(server.RoleViewer)
			resp, page := br.get("/runs/" + created.ID)
			if resp.StatusCode != 200 {
				t.Fatalf("run page: %d %s", resp.StatusCode, page)
			}
			for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret), "S3cret"} {
				if strings.Contains(page, form) {
					t.Fatalf("the page shows the secret as %q:\n%s", form, page)
				}
			}
			for _, want := range []string{
				// The request as sent: headers computed from the secret are *** whole.
				`&#34;Authorization&#34;: &#34;***&#34;`, `&#34;X-Key&#34;: &#34;***&#34;`, `/echo?token=***&#34;`,
				// The output: the target's echo of them.
				`&#34;auth&#34;: &#34;Bearer ***&#34;`, `&#34;key&#34;: &#34;***&#34;`, `&#34;query&#34;: &#34;token=***&#34;`} {
				if !strings.Contains(page, want) {
					t.Errorf("the page lacks %s:\n%s", want, page)
				}
			}
		})
	}
}

var eventsAttr = regexp.MustCompile(`data-events="([^"]+)"`)

// openStream opens an event stream with the browser's session and returns its event names
// as they come.
func (br *browser) openStream(ctx context.Context, path string) (*http.Response, <-chan string) {
	br.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", br.b.url+path, nil)
	resp, err := br.client.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	names := make(chan string, 16)
	go func() {
		defer resp.Body.Close()
		defer close(names)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				names <- name
			}
		}
	}()
	return resp, names
}

// The runs list follows a stream of its own: a run that is created or changes state sends an
// event; a page whose version is stale gets one at once; a bad filter, no session and more
// streams than the bound are refused.
func TestDashboardRunsListStream(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{cfg: func(c *server.Config) { c.MaxStreams = 1 }})
			b.submit("s-1", 1)
			br := b.browser()
			br.signIn(server.RoleViewer)
			_, page := br.get("/?pipeline=orders")
			m := eventsAttr.FindStringSubmatch(page)
			if m == nil || strings.Contains(page, "data-refresh") {
				t.Fatalf("the runs list names no stream, or still polls:\n%s", page)
			}
			path := html.UnescapeString(m[1])
			if !strings.HasPrefix(path, "/events/runs?") || !strings.Contains(path, "pipeline=orders") || !strings.Contains(path, "v=") {
				t.Fatalf("stream path %q", path)
			}
			wait := func(names <-chan string, want bool, what string) {
				t.Helper()
				select {
				case n, ok := <-names:
					if !want || !ok || n != "runs" {
						t.Fatalf("%s: got event %q (open %v)", what, n, ok)
					}
				case <-time.After(3 * time.Second):
					if want {
						t.Fatalf("%s: no event", what)
					}
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			resp, names := br.openStream(ctx, path)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			wait(names, false, "nothing changed")
			// The bound on streams holds for list streams too.
			busy, _ := br.get(path)
			if busy.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("a second stream past the bound: %d", busy.StatusCode)
			}
			b.submit("s-2", 1)
			wait(names, true, "a new run")
			// A run changing state (queued to processing, claimed by a worker).
			if got, err := b.store.ClaimNext(context.Background(), "w-list", time.Now().Add(time.Minute), domain.ClaimFilter{}); err != nil || got == nil {
				t.Fatalf("claim: %v %v", got, err)
			}
			wait(names, true, "a run claimed")
			cancel()
			// A page rendered before a change: its stale version brings an event at once (once
			// the closed stream's slot is released).
			ctx2, cancel2 := context.WithCancel(context.Background())
			defer cancel2()
			var stale <-chan string
			for deadline := time.Now().Add(5 * time.Second); stale == nil; time.Sleep(50 * time.Millisecond) {
				resp, names := br.openStream(ctx2, strings.Replace(path, "v=", "v=0", 1))
				if resp.StatusCode == 200 {
					stale = names
				} else if time.Now().After(deadline) {
					t.Fatalf("the closed stream's slot was never released: %d", resp.StatusCode)
				}
			}
			wait(stale, true, "a stale version")
			cancel2()
			for _, bad := range []string{"/events/runs?since=yesterday"} {
				if r, _ := br.get(bad); r.StatusCode != http.StatusBadRequest {
					t.Fatalf("%s: %d", bad, r.StatusCode)
				}
			}
			if r, _ := b.browser().get(path); r.StatusCode != http.StatusSeeOther {
				t.Fatalf("a stream without a session: %d", r.StatusCode)
			}
		})
	}
}
