package domain

import "time"

// StepType names what a step does.
type StepType string

// The step types of pipeline format v1.
const (
	StepLLM       StepType = "llm"
	StepGate      StepType = "gate"
	StepTransform StepType = "transform"
	StepHTTP      StepType = "http"
	StepExec      StepType = "exec"
	StepApproval  StepType = "approval"
	StepWait      StepType = "wait"
)

// StepTypes lists every step type in the order the documentation presents them.
var StepTypes = []StepType{StepLLM, StepGate, StepTransform, StepHTTP, StepExec, StepApproval, StepWait}

// Step is one node of the pipeline DAG. Exactly one of the type-specific pointers is set,
// matching Type.
type Step struct {
	ID   string
	Type StepType
	// Needs are the ids this step depends on, after the file-order default was applied.
	Needs []string
	// If is a ${{ }} template; empty means always.
	If string
	// Timeout is per attempt (for wait: how long to wait for the signal); 0 means the default.
	Timeout time.Duration
	// Retry is nil when the step inherits the pipeline default.
	Retry       *RetryPolicy
	ForEach     string
	MaxParallel int

	LLM       *LLMStep
	Gate      *GateStep
	Transform *TransformStep
	HTTP      *HTTPStep
	Exec      *ExecStep
	Approval  *ApprovalStep
	Wait      *WaitStep
}

// SideEffecting reports whether the step may change the outside world.
func (s *Step) SideEffecting() bool {
	switch s.Type {
	case StepExec:
		return true
	case StepHTTP:
		return s.HTTP != nil && s.HTTP.Method != "GET" && s.HTTP.Method != "HEAD"
	}
	return false
}

// OnFail says what a failing rule does to the run.
type OnFail string

// Rule outcomes.
const (
	OnFailReject OnFail = "reject"
	OnFailReview OnFail = "review"
)

// Rule is a CEL policy over a gated value.
type Rule struct {
	Expr    string
	Message string
	OnFail  OnFail
}

// LLMStep asks a model for structured output.
type LLMStep struct {
	Model          string
	Prompt         string
	System         string
	Provider       string
	Temperature    *float64
	MaxTokens      int
	MaxTokensTotal int
	// ReasoningEffort is sent to models whose family takes it (none, minimal, low, ...).
	ReasoningEffort string
	OutputSchema    *Schema
	Rules           []Rule
	MaxReasks       int
}

// GateStep validates untrusted data before anything may use it.
type GateStep struct {
	Input  any
	Schema *Schema
	Rules  []Rule
}

// TransformStep builds a value from templates.
type TransformStep struct {
	Output any
}

// HTTPStep sends one request.
type HTTPStep struct {
	Method            string
	URL               string
	Headers           map[string]string
	Query             map[string]string
	Body              any
	ExpectStatus      []int
	Guard             *HTTPGuard
	IdempotencyHeader string
}

// HTTPGuard probes whether the request's effect is already in place.
type HTTPGuard struct {
	Method  string
	URL     string
	Headers map[string]string
	Query   map[string]string
	// DoneIf is a template over `response`.
	DoneIf string
}

// Exec output modes.
const (
	ExecOutputText = "text"
	ExecOutputJSON = "json"
)

// ExecStep runs one child process, never through a shell.
type ExecStep struct {
	Command            []string
	Env                map[string]string
	Stdin              any
	Workdir            string
	Output             string
	TransientExitCodes []int
	Guard              *ExecGuard
}

// ExecGuard is a command whose exit status 0 means the effect is already in place.
type ExecGuard struct {
	Command []string
	Env     map[string]string
}

// ApprovalStep pauses the run until a person decides.
type ApprovalStep struct {
	Message string
}

// WaitStep pauses the run until an external signal delivers a payload.
type WaitStep struct {
	Schema *Schema
}
