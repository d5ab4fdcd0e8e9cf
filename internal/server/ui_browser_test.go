package server_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/llm/llmtest"
	"github.com/pipectl/pipectl/internal/server"
)

// chromium finds the distribution's browser; .ci/run installs it. PIPECTL_CHROMIUM names
// another binary.
func chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("PIPECTL_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no chromium (apt-get install chromium, or set PIPECTL_CHROMIUM): the browser tests are skipped")
	return ""
}

// newChrome starts a headless Chromium with a fresh profile and nothing that calls home; the
// tests navigate only to loopback servers.
func newChrome(t *testing.T) context.Context { return newChromeTB(t) }

func newChromeTB(t testing.TB) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Skipf("chromium does not start (%v): the browser tests are skipped", err)
	}
	return ctx
}

func do(t testing.TB, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get runs one action that returns a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

type css = chromedp.CSS

// shoot saves a screenshot when PIPECTL_SCREENSHOTS names a folder (docs/dashboard.md).
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("PIPECTL_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) signInChrome(t *testing.T, ctx context.Context, role server.Role) {
	b.signInChromeTB(t, ctx, role)
}

func (b *bundle) signInChromeTB(t testing.TB, ctx context.Context, role server.Role) {
	t.Helper()
	do(t, ctx, "sign in as "+string(role),
		chromedp.Navigate(b.url+"/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), b.tokens[role]),
		chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css(".who")))
}

// waitText polls an element's text until it holds want: the page refreshes itself.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := chromedp.Run(tctx, chromedp.Text(css(sel)))
		if err == nil {
			got = v
		}
		cancel()
		if err == nil && strings.Contains(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s reads %q, want %q", sel, got, want)
}

// The dashboard in a real browser: a reviewer signs in, sees the runs, opens one, approves a
// held proposal from the inbox and watches the run finish, rejects another; an operator
// redrives it from the dead-letter queue and throws and resets a kill switch; a model answer holding <script>
// is shown as text; a viewer sees no buttons and neither a cross-site form nor a same-site
// post without the CSRF value changes anything.
func TestDashboardBrowser(t *testing.T) {
	model := llmtest.New()
	defer model.Close()
	evil := `<script>document.title="pwned"</script><img src=x onerror="document.title='pwned'">`
	model.Push(llmtest.Answer(fmt.Sprintf(`{"team": "technical", "priority": "urgent", "summary": %q}`, evil)))
	b := setup(t, ledgers(t)["sqlite"](t), options{workers: true, model: model.BaseURL()})
	ctx := newChrome(t)

	order := b.submit("o-1", 20)
	b.waitState(order.ID, domain.StateNeedsReview)
	second := b.submit("o-2", 30)
	b.waitState(second.ID, domain.StateNeedsReview)
	code, body := b.do("POST", "/api/v1/pipelines/triage/runs", server.RoleOperator, `{"id": "T-1"}`)
	if code != 201 {
		t.Fatalf("triage: %d %s", code, body)
	}
	var triage createdRun
	decodeJSON(t, body, &triage)
	b.waitState(triage.ID, domain.StateNeedsReview)

	do(t, ctx, "sign-in page", chromedp.Navigate(b.url+"/"), chromedp.WaitVisible(css("#token")))
	shoot(t, ctx, "signin")
	b.signInChrome(t, ctx, server.RoleReviewer)
	do(t, ctx, "runs list", chromedp.WaitVisible(css("#runs")))
	rows := get(t, ctx, "count runs", chromedp.Evaluate[int](`document.querySelectorAll("#runs tbody tr").length`))
	if rows != 3 {
		t.Fatalf("the runs list shows %d runs, want 3", rows)
	}
	shoot(t, ctx, "runs")

	// A run submitted while the list is open appears on it; its page follows it over the
	// event stream until it finishes (the model takes four seconds to answer).
	model.Push(llmtest.Reply{Content: `{"team": "billing", "priority": "low", "summary": "slow"}`, Delay: 4 * time.Second})
	code, body = b.do("POST", "/api/v1/pipelines/triage/runs", server.RoleOperator, `{"id": "T-2"}`)
	if code != 201 {
		t.Fatalf("triage T-2: %d %s", code, body)
	}
	var slow createdRun
	decodeJSON(t, body, &slow)
	do(t, ctx, "the new run appears", chromedp.WaitVisible(css(`tr[data-run="`+slow.ID+`"]`)))
	do(t, ctx, "open the new run", chromedp.Click(css(`a[href="/runs/`+slow.ID+`"]`)), chromedp.WaitVisible(css("#state")))
	if following := get(t, ctx, "follows", chromedp.Evaluate[bool](`!!document.getElementById("main").dataset.events`)); !following {
		t.Fatalf("the page of a running run does not follow its event stream (state %s)", get(t, ctx, "state", chromedp.Text(css("#state"))))
	}
	waitText(t, ctx, "#state", "succeeded")
	waitText(t, ctx, "#timeline", "processing → succeeded")
	if code, metrics := b.do("GET", "/metrics", "", ""); code != 200 || !strings.Contains(string(metrics), `route="GET /runs/{id}/events"`) {
		t.Fatalf("the run page opened no event stream: %d", code)
	}
	do(t, ctx, "back to the list", chromedp.Navigate(b.url+"/"), chromedp.WaitVisible(css("#runs")))

	// On a phone-sized screen the list and a run's page fit the width: no sideways scrolling.
	do(t, ctx, "phone", chromedp.EmulateViewport(390, 844))
	for _, path := range []string{"/", "/runs/" + triage.ID, "/inbox"} {
		do(t, ctx, "phone "+path, chromedp.Navigate(b.url+path), chromedp.WaitVisible(css("main h1")))
		if w := get(t, ctx, "page width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
			wide := get(t, ctx, "wide", chromedp.Evaluate[string](`"cw=" + document.documentElement.clientWidth + " iw=" + innerWidth + " bw=" + document.body.scrollWidth + " " + [...document.querySelectorAll("body *")].filter(e => e.scrollWidth > 392 || e.getBoundingClientRect().right > 392).slice(0, 8).map(e => e.tagName + "#" + e.id + "=" + Math.round(e.getBoundingClientRect().right) + "/" + e.scrollWidth).join(" ")`))
			t.Errorf("%s is %d px wide on a 390 px screen: %s", path, w, wide)
		}
	}
	do(t, ctx, "desktop", chromedp.EmulateReset(), chromedp.Navigate(b.url+"/"), chromedp.WaitVisible(css("#runs")))

	// Open the triage run from the list: the model's answer is text, not markup.
	do(t, ctx, "open the triage run", chromedp.Click(css(`a[href="/runs/`+triage.ID+`"]`)), chromedp.WaitVisible(css("#held")))
	answer := get(t, ctx, "answer", chromedp.Text(css(".answer")))
	title := get(t, ctx, "title", chromedp.Title())
	injected := get(t, ctx, "injected", chromedp.Evaluate[int](`document.querySelectorAll("main script, main img").length`))
	if !strings.Contains(answer, `<script>document.title=\"pwned\"</script>`) || strings.Contains(title, "pwned") || injected != 0 {
		t.Fatalf("answer %q, title %q, %d injected elements", answer, title, injected)
	}
	waitText(t, ctx, "#state", "needs_review")
	// The step graph: classify holds the run, done (which needs it) has not run, one line.
	graph := get(t, ctx, "step graph", chromedp.Evaluate[string](`[...document.querySelectorAll("#graph g.node")].map(g => g.dataset.step + "=" + g.getAttribute("class")).join(" ")
		+ " lines=" + document.querySelectorAll("#graph line").length + " width=" + Math.round(document.getElementById("graph").getBoundingClientRect().width)`))
	if graph != "classify=node state-needs-review done=node state-not-run lines=1 width=406" {
		t.Fatalf("step graph: %s", graph)
	}
	shoot(t, ctx, "run")

	// Approve the order from the inbox (oldest first) and watch the run continue.
	do(t, ctx, "inbox", chromedp.Navigate(b.url+"/inbox"), chromedp.WaitVisible(css("section.held")))
	first := get(t, ctx, "first held", chromedp.AttributeValue(css("section.held"), "data-run")).Value
	if first != order.ID {
		t.Fatalf("the inbox starts with %s, want the oldest %s", first, order.ID)
	}
	shoot(t, ctx, "inbox")
	do(t, ctx, "approve",
		chromedp.SendKeys(css(`section[data-run="`+order.ID+`"] input[name=note]`), "checked with the customer"),
		chromedp.Click(css(`section[data-run="`+order.ID+`"] button.approve`)),
		chromedp.WaitVisible(css("#state")))
	waitText(t, ctx, "#state", "succeeded")
	waitText(t, ctx, "#timeline", "reviewer-1")
	b.waitState(order.ID, domain.StateSucceeded)

	before := b.counts()
	// A post from the dashboard's own page without the CSRF value, with the reviewer's cookie:
	// refused before the review is even looked at.
	forged := get(t, ctx, "same-site post without csrf", chromedp.Evaluate[string](
		`fetch("/runs/`+triage.ID+`/review", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		  body: "decision=approve&proposal_hash=x&csrf=forged"}).then(r => r.text().then(t => r.status + " " + r.headers.get("Content-Security-Policy") + " " + t))`, chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(forged, "403 ") || !strings.Contains(forged, "default-src 'none'") || !strings.Contains(forged, "CSRF") {
		t.Fatalf("forged same-site post: %s", forged)
	}
	if after := b.counts(); after != before {
		t.Fatalf("a forged post recorded something: %s -> %s", before, after)
	}

	// Reject the second order: it is dead-lettered.
	do(t, ctx, "reject", chromedp.Navigate(b.url+"/inbox"),
		chromedp.SendKeys(css(`section[data-run="`+second.ID+`"] input[name=note]`), "customer cancelled"),
		chromedp.Click(css(`section[data-run="`+second.ID+`"] button.reject`)),
		chromedp.WaitVisible(css("#state")))
	waitText(t, ctx, "#state", "failed_permanent")

	// An operator redrives it from the dead-letter queue (the gate holds it again) and throws
	// the orders pipeline's kill switch, then resets it.
	do(t, ctx, "sign out", chromedp.Click(css(".signout button")), chromedp.WaitVisible(css("#token")))
	b.signInChrome(t, ctx, server.RoleOperator)
	do(t, ctx, "dead letters", chromedp.Click(css(`nav a[href="/dlq"]`)), chromedp.WaitVisible(css(`#pick-`+second.ID)))
	shoot(t, ctx, "dlq")
	do(t, ctx, "redrive", chromedp.Click(css(`#pick-`+second.ID)), chromedp.Click(css("#redrive-chosen")), chromedp.WaitVisible(css("#done")))
	waitText(t, ctx, "#done", "redriven: "+second.ID)
	b.waitState(second.ID, domain.StateNeedsReview)
	do(t, ctx, "pipelines", chromedp.Click(css(`nav a[href="/pipelines"]`)), chromedp.WaitVisible(css("#reason-orders")),
		chromedp.SendKeys(css("#reason-orders"), "supplier down"),
		chromedp.Click(css(`tr[data-pipeline="orders"] button.reject`)),
		chromedp.WaitVisible(css(`tr[data-pipeline="orders"] button.approve`)))
	waitText(t, ctx, `tr[data-pipeline="orders"]`, "by operator-1")
	waitText(t, ctx, `tr[data-pipeline="orders"]`, "supplier down")
	shoot(t, ctx, "pipelines")
	if code, body := b.do("POST", "/api/v1/pipelines/orders/runs", server.RoleOperator, `{"id": "o-3", "qty": 1}`); code != 423 {
		t.Fatalf("submit while the kill switch is thrown: %d %s", code, body)
	}
	do(t, ctx, "enable", chromedp.Click(css(`tr[data-pipeline="orders"] button.approve`)), chromedp.WaitVisible(css("#reason-orders")))
	waitText(t, ctx, `tr[data-pipeline="orders"]`, "enabled")

	// Sign out, then in as a viewer: the inbox shows the held run and no buttons.
	do(t, ctx, "sign out", chromedp.Click(css(".signout button")), chromedp.WaitVisible(css("#token")))
	b.signInChrome(t, ctx, server.RoleViewer)
	do(t, ctx, "viewer's inbox", chromedp.Navigate(b.url+"/inbox"), chromedp.WaitVisible(css(`section[data-run="`+triage.ID+`"]`)))
	buttons := get(t, ctx, "count buttons", chromedp.Evaluate[int](`document.querySelectorAll("main form, main button").length`))
	if buttons != 0 {
		t.Fatalf("the viewer is shown %d forms or buttons", buttons)
	}
	for _, path := range []string{"/dlq", "/pipelines"} {
		do(t, ctx, "viewer's "+path, chromedp.Navigate(b.url+path), chromedp.WaitVisible(css("main h1")))
		if n := get(t, ctx, "count buttons", chromedp.Evaluate[int](`document.querySelectorAll("main form, main button, main input").length`)); n != 0 {
			t.Fatalf("the viewer is shown %d form elements on %s", n, path)
		}
	}

	// A page on another (loopback) site that submits a form to the dashboard.
	before = b.counts()
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id=f method=post action="%s/runs/%s/review">
<input name=decision value=approve><input name=proposal_hash value=x><input name=csrf value=guess></form>
<script>document.getElementById("f").submit()</script>`, b.url, html.EscapeString(triage.ID))
	}))
	defer attacker.Close()
	attackerURL := strings.Replace(attacker.URL, "127.0.0.1", "localhost", 1) // another site
	do(t, ctx, "cross-site form", chromedp.Navigate(attackerURL), chromedp.WaitVisible(css("#error")))
	landed := get(t, ctx, "landed", chromedp.Text(css("#error")))
	if !strings.Contains(landed, "nothing was changed") {
		t.Fatalf("cross-site post landed on %q", landed)
	}
	if after := b.counts(); after != before {
		t.Fatalf("a cross-site post recorded something: %s -> %s", before, after)
	}
	b.waitState(triage.ID, domain.StateNeedsReview)
}
