package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// The dashboard: server-rendered pages over the same operations as the API. Handlers stay
// thin: they read the form, call operate, and render a template.

//go:embed ui/*.html ui/static/*
var uiFiles embed.FS

// uiCSP forbids inline script and style and every request to another origin: a model answer
// that slips past escaping still cannot run or phone home.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

const (
	sessionCookie = "pipectl_session"
	// signinCookie carries the sign-in form's CSRF value before any session exists.
	signinCookie = "pipectl_signin"
	sessionTTL   = 12 * time.Hour
	maxSessions  = 10000
)

// session is a signed-in browser. Sessions live in the server's memory: a restart or a
// sign-out ends them, and the cookie holds only a random id.
type session struct {
	name    string
	role    Role
	csrf    string
	expires time.Time
}

type sessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func randomID() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (ss *sessions) create(name string, role Role) (string, *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	if len(ss.m) >= maxSessions {
		for id, s := range ss.m {
			if now.After(s.expires) {
				delete(ss.m, id)
			}
		}
		if len(ss.m) >= maxSessions {
			// Bounded memory: half of the live sessions (any half) end rather than sign-in
			// being refused; their browsers sign in again.
			for id := range ss.m {
				delete(ss.m, id)
				if len(ss.m) < maxSessions/2 {
					break
				}
			}
		}
	}
	id := randomID()
	s := &session{name: name, role: role, csrf: randomID(), expires: now.Add(sessionTTL)}
	ss.m[id] = s
	return id, s
}

func (ss *sessions) get(id string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s == nil {
		return nil
	}
	if time.Now().After(s.expires) {
		delete(ss.m, id)
		return nil
	}
	return s
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

type ctxSession struct{}

func sessionOf(r *http.Request) *session {
	s, _ := r.Context().Value(ctxSession{}).(*session)
	return s
}

// uiTemplates parses each page together with the layout.
func uiTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"stateClass": func(s any) string { return "state-" + strings.NewReplacer("_", "-", " ", "-").Replace(fmt.Sprint(s)) },
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"whenp": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"pretty": prettyJSON,
		"duration": func(a time.Time, b *time.Time) string {
			end := time.Now()
			if b != nil {
				end = *b
			}
			return end.Sub(a).Round(time.Millisecond).String()
		},
		"pct": func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
		"secs": func(f float64) string {
			return (time.Duration(f * float64(time.Second))).Round(time.Millisecond).String()
		},
		"plus": func(a, b int) int { return a + b },
		// verdictClass names a verdict's colour class ("not checked" -> verdict-not-checked).
		"verdictClass": func(v string) string { return "verdict-" + strings.ReplaceAll(v, " ", "-") },
		"ms":           func(n int64) string { return (time.Duration(n) * time.Millisecond).String() },
		// dict hands the held-proposal block its page (role, CSRF), run id and proposal.
		"dict": func(page pageData, id string, held *operate.HeldView) map[string]any {
			return map[string]any{"page": page, "id": id, "held": held}
		},
	}
	pages := []string{"signin", "runs", "run", "inbox", "error", "dlq", "pipelines"}
	out := map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/layout.html", "ui/held.html", "ui/"+p+".html")
		if err != nil {
			return nil, err
		}
		out[p] = t
	}
	return out, nil
}

// prettyJSON indents stored JSON for reading; text that is not JSON is shown as it is.
func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	// The text is shown as it is (no \u003c): html/template escapes it for the page.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return string(raw)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// pageData is what every page gets: who is signed in, what they may do, the CSRF value for
// its forms.
type pageData struct {
	Title      string
	User       string
	Role       Role
	CSRF       string
	CanReview  bool
	CanOperate bool
	Nav        string
	// Events, when set, is the event stream the page listens to: it re-renders itself on
	// news. Refresh makes it re-render every few seconds instead (the runs list).
	Events  string
	Refresh bool
	Body    any
}

func (s *Server) uiRoutes(mux *http.ServeMux) {
	static, _ := fs.Sub(uiFiles, "ui/static")
	mux.Handle("GET /assets/", s.uiHeaders(http.StripPrefix("/assets/", http.FileServerFS(static))))
	mux.Handle("GET /signin", s.uiHeaders(http.HandlerFunc(s.signinPage)))
	mux.Handle("POST /signin", s.uiHeaders(s.limitBody(http.HandlerFunc(s.signin))))
	mux.Handle("POST /signout", s.uiHeaders(s.limitBody(s.uiAuth(permRead, http.HandlerFunc(s.signout)))))
	mux.Handle("GET /{$}", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.runsPage))))
	mux.Handle("GET /runs/{id}", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.runPage))))
	// The API's event stream, reached with the session instead of a bearer token.
	mux.Handle("GET /runs/{id}/events", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.events))))
	// The runs list's stream: an event whenever the list its filter selects changes.
	mux.Handle("GET /events/runs", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.listEvents))))
	mux.Handle("GET /inbox", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.inboxPage))))
	mux.Handle("POST /runs/{id}/review", s.uiHeaders(s.limitBody(s.uiAuth(permReview, http.HandlerFunc(s.reviewForm)))))
	mux.Handle("POST /runs/{id}/signal", s.uiHeaders(s.limitBody(s.uiAuth(permReview, http.HandlerFunc(s.signalFormPost)))))
	mux.Handle("POST /runs/{id}/replay", s.uiHeaders(s.limitBody(s.uiAuth(permOperate, http.HandlerFunc(s.replayForm)))))
	mux.Handle("POST /runs/{id}/notes", s.uiHeaders(s.limitBody(s.uiAuth(permOperate, http.HandlerFunc(s.noteForm)))))
	mux.Handle("GET /dlq", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.dlqPage))))
	mux.Handle("POST /dlq/redrive", s.uiHeaders(s.limitBody(s.uiAuth(permOperate, http.HandlerFunc(s.redriveForm)))))
	mux.Handle("GET /pipelines", s.uiHeaders(s.uiAuth(permRead, http.HandlerFunc(s.pipelinesPage))))
	mux.Handle("POST /pipelines/{name}/{action}", s.uiHeaders(s.limitBody(s.uiAuth(permOperate, http.HandlerFunc(s.switchForm)))))
}

// uiHeaders sets the security headers of every dashboard answer.
func (s *Server) uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/assets/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// uiAuth admits a request with a live session whose role carries the permission. A page
// without a session goes to sign-in; a form post also needs the session's CSRF value and,
// when the browser names one, our own origin. A refusal never reaches the handler, so
// nothing is recorded.
func (s *Server) uiAuth(need permission, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sess *session
		if c, err := r.Cookie(sessionCookie); err == nil {
			sess = s.sessions.get(c.Value)
		}
		post := r.Method == http.MethodPost
		if sess == nil {
			if !post {
				http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.uiError(w, r, nil, http.StatusUnauthorized, "You are not signed in (or your session ended). Sign in and try again; nothing was changed.")
			return
		}
		if slot, _ := r.Context().Value(keyActorSlot).(*string); slot != nil {
			*slot = sess.name
		}
		if post {
			if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(sess.csrf)) != 1 {
				s.uiError(w, r, sess, http.StatusForbidden, "This form did not come from this dashboard (missing or wrong CSRF token); nothing was changed.")
				return
			}
		}
		if !sess.role.can(need) {
			s.uiError(w, r, sess, http.StatusForbidden, fmt.Sprintf("%s has role %s, which may not %s; nothing was changed.", sess.name, sess.role, need))
			return
		}
		ctx := context.WithValue(r.Context(), ctxSession{}, sess)
		ctx = context.WithValue(ctx, keyActor, sess.name)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// sameOrigin refuses a form whose Origin header names another site; browsers that send no
// Origin are left to the CSRF token.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (s *Server) data(r *http.Request, title, nav string, body any) pageData {
	d := pageData{Title: title, Nav: nav, Body: body}
	if sess := sessionOf(r); sess != nil {
		d.User, d.Role, d.CSRF = sess.name, sess.role, sess.csrf
		d.CanReview, d.CanOperate = sess.role.can(permReview), sess.role.can(permOperate)
	}
	return d
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, d pageData) {
	t := s.ui[page]
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout.html", d); err != nil {
		s.log.Error("rendering page", "page", page, "request_id", requestID(r), "error", err)
		http.Error(w, "internal error (request id "+requestID(r)+")", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(buf.String()))
}

func (s *Server) uiError(w http.ResponseWriter, r *http.Request, sess *session, status int, msg string) {
	d := pageData{Title: http.StatusText(status), Body: msg}
	if sess != nil {
		d.User, d.Role, d.CSRF = sess.name, sess.role, sess.csrf
	}
	s.render(w, r, status, "error", d)
}

// uiFail shows an operation's error with the status the API would give it.
func (s *Server) uiFail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	msg := err.Error()
	switch operate.KindOf(err) {
	case operate.KindNotFound:
		status = http.StatusNotFound
	case operate.KindInvalid:
		status = http.StatusBadRequest
	case operate.KindRefused, operate.KindConflict:
		status = http.StatusConflict
	case operate.KindDisabled:
		status = http.StatusLocked
	case operate.KindForbidden:
		status = http.StatusForbidden
	case operate.KindInputSchema:
		status = http.StatusUnprocessableEntity
	default:
		s.log.Error("operation failed", "request_id", requestID(r), "route", r.Pattern, "error", err)
		msg = "internal error (request id " + requestID(r) + ")"
	}
	s.uiError(w, r, sessionOf(r), status, msg)
}

// nextPath is what a post-sign-in redirect may hold: a path and query of plain characters.
// Browsers drop tabs and newlines and read "\\" as "/", so "/\t/evil" is "//evil", another
// site: anything outside this set goes to "/".
var nextPath = regexp.MustCompile(`^/(?:[A-Za-z0-9/_.~?=&+-]|%[0-9A-Fa-f]{2})*$`)

// safeNext keeps a post-sign-in redirect on this site: a path, never "//host" or a scheme.
func safeNext(v string) string {
	if !nextPath.MatchString(v) || strings.HasPrefix(v, "//") {
		return "/"
	}
	return v
}

type signinBody struct {
	Next, Error, CSRF string
}

func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	s.showSignin(w, r, http.StatusOK, "")
}

func (s *Server) showSignin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	// Login CSRF: the form's value must match a cookie only this site could set.
	v := randomID()
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: v, Path: "/signin", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	s.render(w, r, status, "signin", pageData{Title: "Sign in", Body: signinBody{Next: safeNext(r.FormValue("next")), Error: msg, CSRF: v}})
}

// signin trades an API token for a session. Failures count against the address as the
// API's do.
func (s *Server) signin(w http.ResponseWriter, r *http.Request) {
	addr := clientAddr(r)
	if s.auth.exhausted(addr) {
		w.Header().Set("Retry-After", "1")
		s.showSignin(w, r, http.StatusTooManyRequests, "Too many failed attempts from "+addr+"; wait and retry.")
		return
	}
	c, err := r.Cookie(signinCookie)
	if err != nil || !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(c.Value)) != 1 {
		s.showSignin(w, r, http.StatusForbidden, "This sign-in form did not come from this dashboard; please try again.")
		return
	}
	t, ok := s.auth.match(strings.TrimSpace(r.PostFormValue("token")))
	if !ok {
		s.auth.limiter(addr).Allow()
		s.metrics.authFailed.Inc()
		s.showSignin(w, r, http.StatusUnauthorized, "That token is not valid.")
		return
	}
	id, _ := s.sessions.create(t.name, t.role)
	if slot, _ := r.Context().Value(keyActorSlot).(*string); slot != nil {
		*slot = t.name
	}
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/signin", MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL.Seconds())})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (s *Server) signout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

type runsBody struct {
	Pipeline, State, Since string
	Pipelines              []string
	States                 []domain.RunState
	Runs                   []operate.RunView
	Error                  string
}

func (s *Server) pipelineNames() []string {
	var names []string
	for n := range s.cfg.Pipelines {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// runsFilter reads the runs list's filter from a query: pipeline, state, since.
func runsFilter(q url.Values) (ledger.RunFilter, error) {
	f := ledger.RunFilter{Pipeline: q.Get("pipeline"), State: domain.RunState(q.Get("state")), Limit: 100}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v)
		if err != nil {
			return f, &operate.Error{Kind: operate.KindInvalid, Err: err}
		}
		f.Since = t
	}
	return f, nil
}

// listVersion fingerprints what the runs list shows of each run (its id, state and last
// change), so that a stream can tell whether the list a page rendered is still current.
func listVersion(runs []*domain.Run) string {
	h := sha256.New()
	for _, r := range runs {
		fmt.Fprintf(h, "%s|%s|%d\n", r.ID, r.State, r.UpdatedAt.UnixMilli())
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func (s *Server) runsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	b := runsBody{Pipeline: q.Get("pipeline"), State: q.Get("state"), Since: q.Get("since"), Pipelines: s.pipelineNames(), States: domain.RunStates}
	f, err := runsFilter(q)
	var runs []*domain.Run
	if err == nil {
		runs, err = s.cfg.Ops.List(r.Context(), f)
	}
	if err != nil && operate.KindOf(err) != operate.KindInvalid {
		s.uiFail(w, r, err)
		return
	}
	status := http.StatusOK
	d := s.data(r, "Runs", "runs", nil)
	if err != nil {
		b.Error, status = err.Error(), http.StatusBadRequest
		d.Refresh = true // no stream for a filter that does not parse; the page says why
	} else {
		// The page follows the list's stream; v is the version it shows, so a change made
		// between this render and the stream's start is not lost.
		sq := url.Values{}
		for _, k := range []string{"pipeline", "state", "since"} {
			if v := q.Get(k); v != "" {
				sq.Set(k, v)
			}
		}
		sq.Set("v", listVersion(runs))
		d.Events = "/events/runs?" + sq.Encode()
	}
	b.Runs = operate.RunViews(runs)
	d.Body = b
	s.render(w, r, status, "runs", d)
}

type runBody struct {
	*operate.RunDoc
	Graph  *graph
	Signal *signalForm
	// Calls are the run's model calls, each with the gate's verdict per rule and per path.
	Calls []callRow
}

// callRow is a model call with its gate verdict made readable: the step's rules, each with
// its verdict on this answer, and the gate's reasons by path. RawReasons keeps reasons the
// page could not read as the gate's (shown as JSON rather than lost).
type callRow struct {
	operate.CallView
	Rules      []operate.RuleView
	Reasons    []gate.Reason
	RawReasons json.RawMessage
}

// callRows pairs each model call with its step's rules in the run's spec (p may be nil).
func callRows(p *domain.Pipeline, calls []operate.CallView) []callRow {
	out := make([]callRow, len(calls))
	for i, c := range calls {
		row := callRow{CallView: c}
		if len(c.Reasons) > 0 && string(c.Reasons) != "null" {
			if err := json.Unmarshal(c.Reasons, &row.Reasons); err != nil {
				row.RawReasons = c.Reasons
			}
		}
		if c.Verdict != "" && p != nil {
			if st := p.Step(c.Step); st != nil && st.LLM != nil {
				row.Rules = operate.RuleVerdicts(st.LLM.Rules, row.Reasons)
			}
		}
		out[i] = row
	}
	return out
}

func (s *Server) runPage(w http.ResponseWriter, r *http.Request) {
	doc, run, err := s.cfg.Ops.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	outcomes := map[string]string{}
	for _, st := range doc.Steps {
		outcomes[st.Step] = st.Outcome
	}
	body := runBody{RunDoc: doc, Signal: s.waitForm(run, doc.Attempts)}
	p, err := s.cfg.Ops.Spec(run)
	body.Calls = callRows(p, doc.ModelCalls)
	if err == nil {
		body.Graph = stepGraph(p, outcomes)
	} else {
		s.log.Warn("run page: the run's spec does not parse; no step graph", "run_id", run.ID, "error", err)
	}
	d := s.data(r, "Run "+doc.Run.ID, "runs", body)
	st := doc.Run.State
	if st == domain.StateQueued || st == domain.StateProcessing || st == domain.StateFailedTransient {
		d.Events = "/runs/" + url.PathEscape(doc.Run.ID) + "/events"
	}
	s.render(w, r, http.StatusOK, "run", d)
}

type inboxItem struct {
	Run  operate.RunView
	Held *operate.HeldView
}

// inboxPage lists every run in needs_review, oldest first, each with what it holds.
func (s *Server) inboxPage(w http.ResponseWriter, r *http.Request) {
	runs, err := s.cfg.Ops.List(r.Context(), ledger.RunFilter{State: domain.StateNeedsReview, Limit: 200})
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	slices.Reverse(runs) // the ledger lists newest first
	items := []inboxItem{}
	for _, run := range runs {
		doc, _, err := s.cfg.Ops.Show(r.Context(), run.ID)
		if err != nil {
			if operate.KindOf(err) == operate.KindNotFound {
				continue
			}
			s.uiFail(w, r, err)
			return
		}
		if doc.Run.State != domain.StateNeedsReview {
			continue // decided meanwhile
		}
		items = append(items, inboxItem{Run: doc.Run, Held: doc.Held})
	}
	s.render(w, r, http.StatusOK, "inbox", s.data(r, "Review inbox", "inbox", items))
}

// reviewForm approves or rejects a held run, bound to the proposal hash the page showed.
func (s *Server) reviewForm(w http.ResponseWriter, r *http.Request) {
	decision := r.PostFormValue("decision")
	if decision != "approve" && decision != "reject" {
		s.uiError(w, r, sessionOf(r), http.StatusBadRequest, `decision must be "approve" or "reject"; nothing was changed.`)
		return
	}
	_, err := s.cfg.Ops.Review(r.Context(), actorOf(r), operate.ReviewRequest{RunID: r.PathValue("id"), Approve: decision == "approve",
		ProposalHash: r.PostFormValue("proposal_hash"), RequireHash: true, Note: r.PostFormValue("note"), Enqueue: true})
	if err != nil {
		if operate.KindOf(err) == operate.KindRefused {
			err = fmt.Errorf("%w. The proposal or the run changed since the page you decided on was shown; nothing was changed. Open the run again to see what it holds now", err)
			err = &operate.Error{Kind: operate.KindRefused, Err: err}
		}
		s.uiFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(r.PathValue("id")), http.StatusSeeOther)
}

type dlqBody struct {
	Runs []operate.RunView
	// Done lists what the last redrive did, one line per run.
	Done []string
}

// dlqPage lists dead-lettered runs, newest first, with the failing step and error.
func (s *Server) dlqPage(w http.ResponseWriter, r *http.Request) {
	s.showDLQ(w, r, http.StatusOK, nil)
}

func (s *Server) showDLQ(w http.ResponseWriter, r *http.Request, status int, done []string) {
	runs, err := s.cfg.Ops.List(r.Context(), ledger.RunFilter{State: domain.StateFailedPermanent, Limit: 200})
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	s.render(w, r, status, "dlq", s.data(r, "Dead-letter queue", "dlq", dlqBody{Runs: operate.RunViews(runs), Done: done}))
}

// redriveForm sends the chosen dead-lettered runs back to the queue, each on its own: one
// that was redriven meanwhile is reported, the others still go.
func (s *Server) redriveForm(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, sessionOf(r), http.StatusBadRequest, "the form could not be read; nothing was changed.")
		return
	}
	ids := r.PostForm["run"]
	if len(ids) == 0 {
		s.uiError(w, r, sessionOf(r), http.StatusBadRequest, "no run was chosen; nothing was changed.")
		return
	}
	if len(ids) > 200 {
		s.uiError(w, r, sessionOf(r), http.StatusBadRequest, "at most 200 runs at once; nothing was changed.")
		return
	}
	var done []string
	failed := false
	for _, id := range ids {
		run, err := s.cfg.Ops.Redrivable(r.Context(), id)
		if err == nil {
			_, err = s.cfg.Ops.Redrive(r.Context(), actorOf(r), run)
		}
		if err != nil {
			if operate.KindOf(err) == operate.KindFailed {
				s.log.Error("redrive failed", "request_id", requestID(r), "run_id", id, "error", err)
				err = fmt.Errorf("internal error (request id %s)", requestID(r))
			}
			failed = true
			done = append(done, "not redriven: "+err.Error())
			continue
		}
		done = append(done, "redriven: "+id)
	}
	status := http.StatusOK
	if failed {
		status = http.StatusConflict
	}
	s.showDLQ(w, r, status, done)
}

type pipelineRow struct {
	operate.PipelineView
	Next  string
	Stats *ledger.PipelineStats
}

type pipelinesBody struct {
	Pipelines []pipelineRow
	Error     string
}

// pipelinesPage lists the served pipelines with their kill switch, triggers, next scheduled
// time and the last 24 hours' figures.
func (s *Server) pipelinesPage(w http.ResponseWriter, r *http.Request) {
	s.showPipelines(w, r, http.StatusOK, "")
}

func (s *Server) showPipelines(w http.ResponseWriter, r *http.Request, status int, msg string) {
	var folder []*domain.Pipeline
	for _, n := range s.pipelineNames() {
		folder = append(folder, s.cfg.Pipelines[n])
	}
	views, err := s.cfg.Ops.Pipelines(r.Context(), folder)
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	stats, _, err := s.cfg.Ops.Stats(r.Context(), time.Now().Add(-24*time.Hour), "", false)
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	byName := map[string]*ledger.PipelineStats{}
	for i := range stats {
		byName[stats[i].Pipeline] = &stats[i]
	}
	b := pipelinesBody{Error: msg}
	for _, v := range views {
		row := pipelineRow{PipelineView: v, Stats: byName[v.Name]}
		if t, ok := s.cfg.NextSlot(v.Name); ok {
			row.Next = t.UTC().Format("2006-01-02 15:04:05Z")
		}
		b.Pipelines = append(b.Pipelines, row)
	}
	s.render(w, r, status, "pipelines", s.data(r, "Pipelines", "pipelines", b))
}

// switchForm throws or resets a served pipeline's kill switch; throwing needs a reason.
func (s *Server) switchForm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.cfg.Pipelines[name]; !ok {
		s.uiError(w, r, sessionOf(r), http.StatusNotFound, fmt.Sprintf("no pipeline %s is served here; nothing was changed.", name))
		return
	}
	action := r.PathValue("action")
	if action != "disable" && action != "enable" {
		s.uiError(w, r, sessionOf(r), http.StatusNotFound, "a kill switch can be disabled or enabled, nothing else; nothing was changed.")
		return
	}
	disable := action == "disable"
	if err := s.cfg.Ops.SetDisabled(r.Context(), actorOf(r), name, disable, strings.TrimSpace(r.PostFormValue("reason"))); err != nil {
		if operate.KindOf(err) == operate.KindInvalid {
			s.showPipelines(w, r, http.StatusBadRequest, name+": "+err.Error()+"; nothing was changed.")
			return
		}
		s.uiFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/pipelines", http.StatusSeeOther)
}

// noteForm adds an operator's note to a run.
func (s *Server) noteForm(w http.ResponseWriter, r *http.Request) {
	if _, err := s.cfg.Ops.Note(r.Context(), actorOf(r), r.PathValue("id"), r.PostFormValue("text")); err != nil {
		s.uiFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(r.PathValue("id")), http.StatusSeeOther)
}

// graph is a pipeline's steps laid out for an SVG drawing: a column per depth in the
// `needs` order, a box per step with its outcome in this run, a line per dependency.
type graph struct {
	Width, Height int
	Nodes         []graphNode
	Edges         []graphEdge
}

type graphNode struct {
	X, Y                     int
	ID, Label, Type, Outcome string
}

type graphEdge struct{ X1, Y1, X2, Y2 int }

const (
	nodeW, nodeH = 170, 44
	gapX, gapY   = 50, 16
)

// stepGraph lays out p's steps; outcomes are the run's step outcomes by step id.
func stepGraph(p *domain.Pipeline, outcomes map[string]string) *graph {
	if p == nil || len(p.Steps) == 0 {
		return nil
	}
	depth := map[string]int{}
	var depthOf func(id string, seen int) int
	byID := map[string]*domain.Step{}
	for _, s := range p.Steps {
		byID[s.ID] = s
	}
	depthOf = func(id string, seen int) int {
		if d, ok := depth[id]; ok {
			return d
		}
		s := byID[id]
		d := 0
		if s != nil && seen < len(p.Steps) { // a validated spec has no cycle; the bound guards anyway
			for _, n := range s.Needs {
				d = max(d, depthOf(n, seen+1)+1)
			}
		}
		depth[id] = d
		return d
	}
	rows := map[int]int{}
	pos := map[string]graphNode{}
	g := &graph{}
	for _, s := range p.Steps {
		d := depthOf(s.ID, 0)
		n := graphNode{X: 8 + d*(nodeW+gapX), Y: 8 + rows[d]*(nodeH+gapY), ID: s.ID, Label: s.ID, Type: string(s.Type), Outcome: outcomes[s.ID]}
		if len([]rune(n.Label)) > 20 {
			n.Label = string([]rune(n.Label)[:19]) + "…"
		}
		if n.Outcome == "" {
			n.Outcome = "not run"
		}
		rows[d]++
		pos[s.ID] = n
		g.Nodes = append(g.Nodes, n)
		g.Width = max(g.Width, n.X+nodeW+8)
		g.Height = max(g.Height, n.Y+nodeH+8)
	}
	for _, s := range p.Steps {
		to := pos[s.ID]
		for _, need := range s.Needs {
			if from, ok := pos[need]; ok {
				g.Edges = append(g.Edges, graphEdge{X1: from.X + nodeW, Y1: from.Y + nodeH/2, X2: to.X, Y2: to.Y + nodeH/2})
			}
		}
	}
	return g
}

// replayForm queues a replay of a run, from a chosen step, with recorded or live model
// answers, and opens the new run.
func (s *Server) replayForm(w http.ResponseWriter, r *http.Request) {
	res, err := s.cfg.Ops.Replay(r.Context(), actorOf(r), operate.ReplayRequest{RunID: r.PathValue("id"), From: r.PostFormValue("from"),
		LLM: r.PostFormValue("llm"), Enqueue: true})
	if res == nil {
		s.uiFail(w, r, err)
		return
	}
	if err != nil {
		s.log.Warn("replay created and then failed", "request_id", requestID(r), "run_id", res.Run.ID, "error", err)
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(res.Run.ID), http.StatusSeeOther)
}

// signalForm is the form a wait step's schema gives: a field per property when every
// property is a plain boolean, integer, number, string or string enum; else one JSON box.
type signalForm struct {
	Step   string
	Fields []signalField
	// Raw asks for the payload as JSON text.
	Raw bool
}

type signalField struct {
	Name, Type string
	Enum       []string
	Required   bool
}

// waitForm finds the wait step a run in waiting_external waits on and its form.
func (s *Server) waitForm(run *domain.Run, attempts []operate.AttemptView) *signalForm {
	if run.State != domain.StateWaitingExternal {
		return nil
	}
	step := ""
	for i := len(attempts) - 1; i >= 0; i-- {
		if attempts[i].Outcome == domain.OutcomeWaiting {
			step = attempts[i].Step
			break
		}
	}
	p, err := s.cfg.Ops.Spec(run)
	if step == "" || err != nil || p.Step(step) == nil || p.Step(step).Wait == nil {
		return nil
	}
	f := &signalForm{Step: step, Raw: true}
	sc := p.Step(step).Wait.Schema
	if sc == nil {
		return f
	}
	doc, _ := sc.Doc.(map[string]any)
	props, _ := doc["properties"].(map[string]any)
	if doc["type"] != "object" || len(props) == 0 {
		return f
	}
	required := map[string]bool{}
	if req, ok := doc["required"].([]any); ok {
		for _, r := range req {
			if n, ok := r.(string); ok {
				required[n] = true
			}
		}
	}
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		prop, _ := props[n].(map[string]any)
		fd := signalField{Name: n, Required: required[n]}
		if enum, ok := prop["enum"].([]any); ok {
			for _, e := range enum {
				str, ok := e.(string)
				if !ok {
					return f
				}
				fd.Enum = append(fd.Enum, str)
			}
			fd.Type = "enum"
		} else if t, ok := prop["type"].(string); ok && (t == "boolean" || t == "integer" || t == "number" || t == "string") {
			fd.Type = t
		} else {
			return f
		}
		f.Fields = append(f.Fields, fd)
	}
	f.Raw = false
	return f
}

// payload reads the posted form back into the JSON value the schema describes; the types
// come from the spec, never from the form.
func (f *signalForm) payload(r *http.Request) (any, error) {
	if f.Raw {
		return domain.DecodeJSON([]byte(r.PostFormValue("json")))
	}
	out := map[string]any{}
	for _, fd := range f.Fields {
		v := strings.TrimSpace(r.PostFormValue("f." + fd.Name))
		switch {
		case fd.Type == "boolean":
			out[fd.Name] = v == "true"
		case v == "" && !fd.Required:
		case fd.Type == "integer":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s must be a whole number, not %q", fd.Name, v)
			}
			out[fd.Name] = n
		case fd.Type == "number":
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("%s must be a number, not %q", fd.Name, v)
			}
			out[fd.Name] = n
		default:
			out[fd.Name] = v
		}
	}
	return out, nil
}

// signalFormPost completes a run's wait step with the form's payload.
func (s *Server) signalFormPost(w http.ResponseWriter, r *http.Request) {
	run, err := s.cfg.Ops.Run(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	doc, _, err := s.cfg.Ops.Show(r.Context(), run.ID)
	if err != nil {
		s.uiFail(w, r, err)
		return
	}
	form := s.waitForm(run, doc.Attempts)
	if form == nil || form.Step != r.PostFormValue("step") {
		s.uiError(w, r, sessionOf(r), http.StatusConflict, fmt.Sprintf("run %s is %s and does not wait on step %q now; nothing was changed.", run.ID, run.State, r.PostFormValue("step")))
		return
	}
	payload, err := form.payload(r)
	if err != nil {
		s.uiError(w, r, sessionOf(r), http.StatusBadRequest, err.Error()+"; nothing was changed.")
		return
	}
	if _, err := s.cfg.Ops.Signal(r.Context(), actorOf(r), operate.SignalRequest{RunID: run.ID, Step: form.Step, Payload: payload, Enqueue: true}); err != nil {
		s.uiFail(w, r, err)
		return
	}
	http.Redirect(w, r, "/runs/"+url.PathEscape(run.ID), http.StatusSeeOther)
}
