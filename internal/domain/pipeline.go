// Package domain holds the types every part of pipectl shares: the parsed pipeline, run states and error classes.
package domain

import "time"

// APIVersion is the only pipeline format version this build understands.
const APIVersion = "pipectl/v1"

// KindPipeline is the value of the top-level kind key of a pipeline file.
const KindPipeline = "Pipeline"

// Pipeline is a validated pipeline file. Template strings keep their ${{ }} placeholders;
// they are evaluated when a run reaches them.
type Pipeline struct {
	APIVersion  string
	Kind        string
	Name        string
	Description string
	Inputs      *Schema
	Idempotency Idempotency
	Secrets     []string
	Defaults    Defaults
	Limits      Limits
	Alerts      Alerts
	Triggers    Triggers
	Steps       []*Step
	// Sinks lists, per step id, the placeholders in side-effect positions that untrusted data
	// reaches and what the validator proved about it; the engine checks them again at run time.
	Sinks map[string][]SinkCheck

	// Path is the file the pipeline was read from; Text its exact bytes, so a run can record
	// and later replay the very spec it ran with.
	Path string
	Text []byte
}

// Step returns the step with the given id, or nil.
func (p *Pipeline) Step(id string) *Step {
	for _, s := range p.Steps {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// Schema is a JSON Schema given inline or by reference to a file.
type Schema struct {
	// Ref is the path as written in the pipeline file, relative to it; empty when inline.
	Ref string
	// Location is the absolute URL the schema was compiled under (file://...).
	Location string
	// Doc is the schema document as decoded JSON.
	Doc any
	// Compiled is the JSON Schema library's compiled form, opaque here: the static checks read
	// the schema as the gate enforces it, never a second reading of Doc.
	Compiled any
}

// Idempotency configures the run key.
type Idempotency struct {
	// Key is a template over inputs; empty means the hash of the canonical input.
	Key string
}

// RetryPolicy bounds retries of transient failures.
type RetryPolicy struct {
	MaxAttempts     int
	InitialInterval time.Duration
	MaxInterval     time.Duration
	Multiplier      float64
}

// DefaultRetry applies when neither the pipeline nor the step says otherwise.
var DefaultRetry = RetryPolicy{MaxAttempts: 3, InitialInterval: time.Second, MaxInterval: time.Minute, Multiplier: 2}

// Defaults hold per-step settings that steps inherit.
type Defaults struct {
	Timeout time.Duration
	Retry   RetryPolicy
}

// Default values used when a pipeline leaves a setting out.
const (
	DefaultStepTimeout = 30 * time.Second
	DefaultRunTimeout  = time.Hour
	DefaultMaxParallel = 4
	// MaxParallelCap is the hard ceiling for limits.max_parallel and a step's max_parallel.
	MaxParallelCap = 64
	// MaxAttemptsCap keeps a typo such as 1000 from retrying for days.
	MaxAttemptsCap = 100
)

// Limits bound one run.
type Limits struct {
	RunTimeout  time.Duration
	MaxParallel int
}

// Alerts are thresholds checked by `pipectl stats --check`; nil means not set.
type Alerts struct {
	DeadLetterRate *float64
	RetryRate      *float64
	P95Seconds     *float64
}
