// Package server is pipectl's HTTP API and web dashboard: routes that translate requests into operations, with roles, webhooks and metrics.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/operate"
)

// Config is what a server needs; cmd/pipectl fills it.
type Config struct {
	Ops *operate.Ops
	// Pipelines are the pipelines this server serves, by name.
	Pipelines map[string]*domain.Pipeline
	// PipelineDir names where they came from, for messages.
	PipelineDir string
	Tokens      []Token
	Log         *slog.Logger
	// Ready reports whether the ledger answers (GET /readyz).
	Ready func(context.Context) error
	// Registry receives the server's metrics and is served on /metrics.
	Registry *prometheus.Registry
	// MaxBody caps request bodies (default 1 MiB).
	MaxBody int64
	// Secret returns the value of a webhook secret by name (from the environment in pipectl).
	Secret func(name string) (string, bool)
	// NextSlot returns a pipeline's next scheduled time, if it has a schedule.
	NextSlot func(pipeline string) (time.Time, bool)
	// FailedAuthRate and FailedAuthBurst bound failed authentication attempts per client
	// address (default 1 per second, burst 10).
	FailedAuthRate  float64
	FailedAuthBurst int
	// EventPoll is how often an event stream looks for news (default 200ms).
	EventPoll time.Duration
	// MaxStreams bounds the event streams open at once (default 64): each polls the ledger.
	MaxStreams int
	// BodyTimeout bounds the time a client may take to send a request body (default 30s).
	BodyTimeout time.Duration
}

// Server serves the API. Create it with New.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	auth    *authenticator
	// stopping is closed when the HTTP server shuts down, so that event streams end.
	stopping chan struct{}
	stopOnce sync.Once
	// streams holds a token per open event stream.
	streams chan struct{}
	// sessions are the dashboard's signed-in browsers; ui its parsed pages.
	sessions *sessions
	ui       map[string]*template.Template
}

// New checks the configuration and registers the metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Ops == nil || cfg.Log == nil {
		return nil, fmt.Errorf("server: Ops and Log are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.EventPoll <= 0 {
		cfg.EventPoll = 200 * time.Millisecond
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Secret == nil {
		cfg.Secret = func(string) (string, bool) { return "", false }
	}
	if cfg.NextSlot == nil {
		cfg.NextSlot = func(string) (time.Time, bool) { return time.Time{}, false }
	}
	a, err := newAuthenticator(cfg.Tokens, cfg.FailedAuthRate, cfg.FailedAuthBurst)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	ui, err := uiTemplates()
	if err != nil {
		return nil, fmt.Errorf("server: dashboard templates: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Log, metrics: m, auth: a, stopping: make(chan struct{}), streams: make(chan struct{}, cfg.MaxStreams),
		sessions: &sessions{m: map[string]*session{}}, ui: ui}, nil
}

// Stop ends the event streams; call it (or register it with http.Server.RegisterOnShutdown)
// when shutting down, since a stream is never idle.
func (s *Server) Stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// ScheduleLag records how late after its slot a scheduled run was created.
func (s *Server) ScheduleLag(pipeline string, lag time.Duration) {
	s.metrics.scheduleLag.WithLabelValues(pipeline).Observe(lag.Seconds())
}

// route is one endpoint: its method and pattern, who may call it, and its handler.
type route struct {
	method, path string
	// need is the permission a token must carry; public routes need none.
	need    permission
	public  bool
	handler http.HandlerFunc
}

func (s *Server) routes() []route {
	return []route{
		{method: "GET", path: "/healthz", public: true, handler: s.healthz},
		{method: "GET", path: "/readyz", public: true, handler: s.readyz},
		{method: "GET", path: "/metrics", public: true, handler: promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}).ServeHTTP},
		{method: "GET", path: "/api/v1/openapi.json", public: true, handler: s.openapi},
		{method: "GET", path: "/api/v1/pipelines", need: permRead, handler: s.listPipelines},
		{method: "POST", path: "/api/v1/pipelines/{name}/runs", need: permOperate, handler: s.submit},
		{method: "POST", path: "/api/v1/pipelines/{name}/disable", need: permOperate, handler: s.disable},
		{method: "POST", path: "/api/v1/pipelines/{name}/enable", need: permOperate, handler: s.enable},
		{method: "GET", path: "/api/v1/runs", need: permRead, handler: s.listRuns},
		{method: "GET", path: "/api/v1/runs/{id}", need: permRead, handler: s.getRun},
		{method: "GET", path: "/api/v1/runs/{id}/events", need: permRead, handler: s.events},
		{method: "POST", path: "/api/v1/runs/{id}/review", need: permReview, handler: s.review},
		{method: "POST", path: "/api/v1/runs/{id}/signal", need: permReview, handler: s.signal},
		{method: "POST", path: "/api/v1/runs/{id}/redrive", need: permOperate, handler: s.redrive},
		{method: "POST", path: "/api/v1/runs/{id}/replay", need: permOperate, handler: s.replay},
		{method: "POST", path: "/api/v1/runs/{id}/notes", need: permOperate, handler: s.note},
		{method: "GET", path: "/api/v1/dlq", need: permRead, handler: s.dlq},
		{method: "GET", path: "/api/v1/stats", need: permRead, handler: s.stats},
		// Webhooks authenticate by the signature of their body, not by a token.
		{method: "POST", path: "/hooks/{name}", public: true, handler: s.hook},
	}
}

// Routes lists "METHOD PATH" of every route, sorted: the OpenAPI test checks them.
func (s *Server) Routes() []string {
	var out []string
	for _, rt := range s.routes() {
		out = append(out, rt.method+" "+rt.path)
	}
	sort.Strings(out)
	return out
}

// Handler returns the API with its middleware: recovery, request ids, access log and
// metrics outside; body limit and authentication per route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		h := http.Handler(rt.handler)
		if !rt.public {
			h = s.authorize(rt.need, h)
		}
		mux.Handle(rt.method+" "+rt.path, s.limitBody(h))
	}
	s.uiRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, http.StatusNotFound, "not-found", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), nil)
	})
	return s.observe(s.recover(mux))
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	// keyActor holds the authenticated token's name for the handler.
	keyActor
	// keyActorSlot holds a *string the access log reads after the handler: authorize fills it.
	keyActorSlot
)

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(keyRequestID).(string)
	return id
}

// actorOf is the authenticated token's name: it is recorded on every action.
func actorOf(r *http.Request) string {
	a, _ := r.Context().Value(keyActor).(string)
	return a
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// statusWriter remembers the status and size of a response; it keeps Flush for event streams.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe gives each request an id (the caller's X-Request-Id when it is sane), logs it and
// counts it by route pattern and status.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID.MatchString(id) {
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(r.Context(), keyRequestID, id)
		actor := new(string)
		ctx = context.WithValue(ctx, keyActorSlot, actor)
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		took := time.Since(start)
		s.metrics.requests.WithLabelValues(route, fmt.Sprint(sw.status)).Inc()
		s.metrics.latency.WithLabelValues(route).Observe(took.Seconds())
		s.log.Info("request", "request_id", id, "method", r.Method, "path", r.URL.Path, "route", route, "status", sw.status,
			"bytes", sw.bytes, "duration_ms", float64(took.Microseconds())/1000, "actor", *actor, "remote", r.RemoteAddr)
	})
}

// recover turns a panic in a handler into a 500 problem instead of a dropped connection.
func (s *Server) recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "request_id", requestID(r), "panic", fmt.Sprint(v))
				s.problem(w, r, http.StatusInternalServerError, "internal", "internal error (request id "+requestID(r)+")", nil)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// limitBody caps what a handler can read, in size (past it the handler answers 413) and, for
// requests with a body, in time: a client trickling bytes holds nothing for long. (The server
// sets no read timeout of its own: it would also cut event streams.)
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			s.log.Warn("not ready", "error", err)
			s.problem(w, r, http.StatusServiceUnavailable, "not-ready", "the ledger does not answer", nil)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	deliveries  *prometheus.CounterVec
	scheduleLag *prometheus.HistogramVec
	authFailed  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_http_requests_total",
			Help: "HTTP requests by route pattern and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipectl_http_request_duration_seconds",
			Help: "HTTP request latency by route pattern.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12)}, []string{"route"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_webhook_deliveries_total",
			Help: "Webhook deliveries by pipeline and outcome (created, duplicate, bad_signature, invalid, refused, error)."}, []string{"pipeline", "outcome"}),
		scheduleLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipectl_schedule_lag_seconds",
			Help: "How late a scheduled slot's run was created after the slot time.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"pipeline"}),
		authFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "pipectl_http_auth_failures_total",
			Help: "Requests refused for a missing or wrong token."}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.deliveries, m.scheduleLag, m.authFailed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
