package worker

import (
	"encoding/json"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pipectl/pipectl/internal/domain"
)

// Metrics are the worker's Prometheus series, on a registry of their own, with the Go runtime
// and process collectors beside them. Names follow Prometheus conventions (base units,
// _total counters, _seconds durations) and no label is ever empty.
type Metrics struct {
	Registry     *prometheus.Registry
	Runs         *prometheus.CounterVec
	Attempts     *prometheus.CounterVec
	Retries      *prometheus.CounterVec
	DeadLetters  *prometheus.CounterVec
	StepSeconds  *prometheus.HistogramVec
	ClaimSeconds prometheus.Histogram
	QueueDepth   prometheus.Gauge
	// Paused counts runs waiting for a person (needs_review) or a signal (waiting_external).
	Paused       *prometheus.GaugeVec
	ModelCalls   *prometheus.CounterVec
	ModelTokens  *prometheus.CounterVec
	ModelSeconds *prometheus.HistogramVec
	GateVerdicts *prometheus.CounterVec
	// HostLane is 1 for "held" while this worker holds a lane of its host to drain with, for
	// "waiting" while it waits for one, and for "without" while it drains without one (its
	// holders frozen, or lanes it cannot take) (Worker.Lanes).
	HostLane *prometheus.GaugeVec
}

// Label values standing in for "none", since Prometheus reads an empty label as an absent one.
const (
	noClass   = "none"
	unknownID = "unknown"
)

// NewMetrics registers the series. version labels pipectl_build_info.
func NewMetrics(version string) *Metrics {
	// Step attempts take from tens of microseconds (a transform) to minutes (a model call with
	// re-asks): 100 µs to about 7 minutes in factors of 4.
	stepBuckets := prometheus.ExponentialBuckets(0.0001, 4, 12)
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_runs_total",
			Help: "Runs that left a worker, by pipeline and the state they reached."}, []string{"pipeline", "state"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_step_attempts_total",
			Help: "Step attempts by pipeline, step, outcome and error class (none when the attempt did not fail)."},
			[]string{"pipeline", "step", "outcome", "class"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_retries_total",
			Help: "Step attempts after the first."}, []string{"pipeline", "step"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_dead_letters_total",
			Help: "Runs moved to failed_permanent."}, []string{"pipeline"}),
		StepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipectl_step_duration_seconds",
			Help: "Step attempt duration in seconds.", Buckets: stepBuckets}, []string{"pipeline", "step"}),
		ClaimSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pipectl_claim_duration_seconds",
			Help: "Time to claim runs from the ledger, in seconds; on PostgreSQL it includes the runs of pure steps a claim executes itself.", Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12)}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pipectl_queue_depth", Help: "Runs queued or due for a retry."}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pipectl_runs_paused",
			Help: "Runs paused in needs_review (waiting for a person) or waiting_external (waiting for a signal)."}, []string{"state"}),
		ModelCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_model_calls_total",
			Help: "Model calls by provider, model and outcome (accepted, rejected, review, invalid_json, refused, truncated, filtered, error)."},
			[]string{"provider", "model", "outcome"}),
		ModelTokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_model_tokens_total",
			Help: "Tokens the provider reported, by provider, model and kind (prompt or completion)."}, []string{"provider", "model", "kind"}),
		ModelSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipectl_model_call_duration_seconds",
			Help: "Model call latency in seconds, by provider and model.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)},
			[]string{"provider", "model"}),
		GateVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_gate_verdicts_total",
			Help: "Gate verdicts (pass, reject, review) on model proposals and gate steps, by pipeline and step."},
			[]string{"pipeline", "step", "verdict"}),
	}
	m.HostLane = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pipectl_host_lane",
		Help: "1 while this worker holds a lane of its host to drain runs of pure steps with (held), waits for one (waiting), or drains without one (without)."}, []string{"state"})
	for _, state := range []string{"held", "waiting", "without"} {
		m.HostLane.WithLabelValues(state).Set(0)
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pipectl_build_info",
		Help: "Always 1; its labels say which pipectl build is running."}, []string{"version", "revision", "goversion"})
	buildInfo.WithLabelValues(nonEmpty(version), revision(), runtime.Version()).Set(1)
	for _, s := range []domain.RunState{domain.StateNeedsReview, domain.StateWaitingExternal} {
		m.Paused.WithLabelValues(string(s)).Set(0)
	}
	m.Registry.MustRegister(m.Runs, m.Attempts, m.Retries, m.DeadLetters, m.StepSeconds, m.ClaimSeconds, m.QueueDepth,
		m.Paused, m.ModelCalls, m.ModelTokens, m.ModelSeconds, m.GateVerdicts, m.HostLane, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// revision is the VCS revision the binary was built from, when the build recorded it.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return unknownID
}

func nonEmpty(s string) string {
	if s == "" {
		return unknownID
	}
	return s
}

// Handler serves /metrics and /healthz; every other path is 404, so that a scraper or a probe
// pointed at the wrong path fails loudly instead of reading metrics as health.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	return mux
}

// AttemptFinished implements the engine's observer.
func (m *Metrics) AttemptFinished(pipeline string, step *domain.Step, att *domain.Attempt) {
	class := string(att.ErrorClass)
	if class == "" {
		class = noClass
	}
	m.Attempts.WithLabelValues(pipeline, step.ID, att.Outcome, class).Inc()
	if att.Attempt > 1 {
		m.Retries.WithLabelValues(pipeline, step.ID).Inc()
	}
	// The attempt's own clock readings, not its stored milliseconds: a transform takes
	// microseconds, and rounding would put them all in one bucket at zero.
	d := att.FinishedAt.Sub(att.StartedAt)
	if d < 0 || att.FinishedAt.IsZero() {
		d = time.Duration(att.DurationMS) * time.Millisecond
	}
	m.StepSeconds.WithLabelValues(pipeline, step.ID).Observe(d.Seconds())
	for _, c := range att.Calls {
		provider, model := nonEmpty(c.Provider), nonEmpty(c.Model)
		m.ModelCalls.WithLabelValues(provider, model, nonEmpty(c.Outcome)).Inc()
		m.ModelTokens.WithLabelValues(provider, model, "prompt").Add(float64(max(c.PromptTokens, 0)))
		m.ModelTokens.WithLabelValues(provider, model, "completion").Add(float64(max(c.CompletionTokens, 0)))
		m.ModelSeconds.WithLabelValues(provider, model).Observe(float64(c.LatencyMS) / 1000)
		if c.Verdict != "" {
			m.GateVerdicts.WithLabelValues(pipeline, step.ID, c.Verdict).Inc()
		}
	}
	if step.Type == domain.StepGate {
		if v := gateDecision(att.Response); v != "" {
			m.GateVerdicts.WithLabelValues(pipeline, step.ID, v).Inc()
		}
	}
}

// gateDecision reads the verdict a gate step recorded as its response ({"decision": ...});
// "" when the step failed before its gate ran.
func gateDecision(resp json.RawMessage) string {
	var v struct {
		Decision string `json:"decision"`
	}
	if len(resp) == 0 || json.Unmarshal(resp, &v) != nil {
		return ""
	}
	switch v.Decision {
	case "pass", "reject", "review":
		return v.Decision
	}
	return ""
}

// RunChanged implements the engine's observer.
func (m *Metrics) RunChanged(pipeline string, to domain.RunState) {
	switch to {
	case domain.StateSucceeded, domain.StateFailedPermanent, domain.StateNeedsReview, domain.StateWaitingExternal, domain.StateFailedTransient:
		m.Runs.WithLabelValues(pipeline, string(to)).Inc()
	}
	if to == domain.StateFailedPermanent {
		m.DeadLetters.WithLabelValues(pipeline).Inc()
	}
}

// setPaused records the paused-run counts the worker sampled from the ledger.
func (m *Metrics) setPaused(counts map[domain.RunState]int) {
	for _, s := range []domain.RunState{domain.StateNeedsReview, domain.StateWaitingExternal} {
		m.Paused.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}
