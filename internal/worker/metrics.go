package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipectl/pipectl/internal/domain"
)

// Metrics are the worker's Prometheus series, on a registry of their own.
type Metrics struct {
	Registry     *prometheus.Registry
	Runs         *prometheus.CounterVec
	Attempts     *prometheus.CounterVec
	Retries      *prometheus.CounterVec
	DeadLetters  *prometheus.CounterVec
	StepSeconds  *prometheus.HistogramVec
	ClaimSeconds prometheus.Histogram
	QueueDepth   prometheus.Gauge
}

// NewMetrics registers the series.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_runs_total",
			Help: "Runs that left a worker, by pipeline and the state they reached."}, []string{"pipeline", "state"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_step_attempts_total",
			Help: "Step attempts by pipeline, step, outcome and error class."}, []string{"pipeline", "step", "outcome", "class"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_retries_total",
			Help: "Step attempts after the first."}, []string{"pipeline", "step"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipectl_dead_letters_total",
			Help: "Runs moved to failed_permanent."}, []string{"pipeline"}),
		StepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pipectl_step_duration_seconds",
			Help: "Step attempt duration.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"pipeline", "step"}),
		ClaimSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pipectl_claim_seconds",
			Help: "Time to claim the next run from the ledger.", Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12)}),
		QueueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pipectl_queue_depth", Help: "Runs queued or due for a retry."}),
	}
	m.Registry.MustRegister(m.Runs, m.Attempts, m.Retries, m.DeadLetters, m.StepSeconds, m.ClaimSeconds, m.QueueDepth)
	return m
}

// AttemptFinished implements the engine's observer.
func (m *Metrics) AttemptFinished(pipeline, step string, attempt int, outcome string, class domain.ErrorClass, d time.Duration) {
	m.Attempts.WithLabelValues(pipeline, step, outcome, string(class)).Inc()
	if attempt > 1 {
		m.Retries.WithLabelValues(pipeline, step).Inc()
	}
	m.StepSeconds.WithLabelValues(pipeline, step).Observe(d.Seconds())
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
