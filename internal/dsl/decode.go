package dsl

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// decoder turns the JSON-shaped document into domain types. The pipeline schema has already
// reported wrong types, so the decoder skips what it cannot read instead of reporting it twice.
type decoder struct {
	doc     *document
	schemas *schemaStore
	dir     string
	absPath string
}

func (dc *decoder) decode() *domain.Pipeline {
	root, _ := dc.doc.root.(map[string]any)
	p := &domain.Pipeline{
		APIVersion:  str(root["apiVersion"]),
		Kind:        str(root["kind"]),
		Name:        str(root["name"]),
		Description: str(root["description"]),
		Path:        dc.doc.path,
		Text:        dc.doc.src,
	}
	if _, ok := root["inputs"]; ok {
		p.Inputs = dc.schema("/inputs")
	}
	if idem, ok := root["idempotency"].(map[string]any); ok {
		p.Idempotency.Key = str(idem["key"])
		if _, set := idem["key"]; set && !strings.Contains(p.Idempotency.Key, "${{") {
			dc.doc.errorf("/idempotency/key", "has no ${{ }} placeholder, so every run would share one key")
		}
	}
	for _, s := range list(root["secrets"]) {
		if name, ok := s.(string); ok {
			p.Secrets = append(p.Secrets, name)
		}
	}
	p.Defaults.Timeout = domain.DefaultStepTimeout
	p.Defaults.Retry = domain.DefaultRetry
	if t, ok := dc.duration("/defaults/timeout"); ok {
		p.Defaults.Timeout = t
	}
	if r := dc.retry("/defaults/retry", domain.DefaultRetry); r != nil {
		p.Defaults.Retry = *r
	}
	p.Limits = domain.Limits{RunTimeout: domain.DefaultRunTimeout, MaxParallel: domain.DefaultMaxParallel}
	if t, ok := dc.duration("/limits/run_timeout"); ok {
		p.Limits.RunTimeout = t
	}
	if n, ok := integer(valueAt(root, "/limits/max_parallel")); ok {
		p.Limits.MaxParallel = n
	}
	p.Alerts.DeadLetterRate = number(valueAt(root, "/alerts/dead_letter_rate"))
	p.Alerts.RetryRate = number(valueAt(root, "/alerts/retry_rate"))
	p.Alerts.P95Seconds = number(valueAt(root, "/alerts/p95_seconds"))
	p.Triggers = dc.triggers(root, p.Inputs)
	if p.Defaults.Timeout > p.Limits.RunTimeout {
		dc.doc.errorf("/defaults/timeout", "%s exceeds limits.run_timeout %s", p.Defaults.Timeout, p.Limits.RunTimeout)
	}

	for i, raw := range list(root["steps"]) {
		// A malformed entry still takes its slot, so that step i stays at /steps/i.
		m, _ := raw.(map[string]any)
		s := dc.step(pointerJoin("/steps", i), m, p)
		if s.Needs == nil && len(p.Steps) > 0 {
			if _, explicit := m["needs"]; !explicit {
				if prev := p.Steps[len(p.Steps)-1]; prev.ID != "" && prev.ID != s.ID {
					s.Needs = []string{prev.ID}
				}
			}
		}
		if s.Needs == nil {
			s.Needs = []string{}
		}
		p.Steps = append(p.Steps, s)
	}
	return p
}

func (dc *decoder) step(ptr string, m map[string]any, p *domain.Pipeline) *domain.Step {
	s := &domain.Step{ID: str(m["id"]), Type: domain.StepType(str(m["type"])), If: str(m["if"]), ForEach: str(m["for_each"])}
	if n, ok := m["needs"].([]any); ok {
		s.Needs = []string{}
		for _, v := range n {
			if id, ok := v.(string); ok {
				s.Needs = append(s.Needs, id)
			}
		}
	}
	if t, ok := dc.duration(ptr + "/timeout"); ok {
		s.Timeout = t
		if t > p.Limits.RunTimeout && s.Type != domain.StepWait && s.Type != domain.StepApproval {
			dc.doc.errorf(ptr+"/timeout", "%s exceeds limits.run_timeout %s, so the step could never use it", t, p.Limits.RunTimeout)
		}
	}
	if _, ok := m["retry"]; ok {
		s.Retry = dc.retry(ptr+"/retry", p.Defaults.Retry)
	}
	if n, ok := integer(m["max_parallel"]); ok {
		s.MaxParallel = n
		if s.ForEach == "" {
			dc.doc.errorf(ptr+"/max_parallel", "max_parallel applies only to a step with for_each")
		}
	}
	if s.ForEach != "" && s.MaxParallel == 0 {
		s.MaxParallel = 1
	}
	if s.ForEach != "" && (s.Type == domain.StepApproval || s.Type == domain.StepWait) {
		dc.doc.errorf(ptr+"/for_each", "for_each is not supported on %s steps: a run pauses for one decision or signal at a time", s.Type)
	}
	switch s.Type {
	case domain.StepLLM:
		l := &domain.LLMStep{Model: str(m["model"]), Prompt: str(m["prompt"]), System: str(m["system"]), Provider: str(m["provider"]), MaxReasks: 1}
		l.Temperature = number(m["temperature"])
		l.MaxTokens, _ = integer(m["max_tokens"])
		l.MaxTokensTotal, _ = integer(m["max_tokens_total"])
		l.ReasoningEffort = str(m["reasoning_effort"])
		if n, ok := integer(m["max_reasks"]); ok {
			l.MaxReasks = n
		}
		if _, ok := valueAt(m, "/output/schema").(map[string]any); ok {
			l.OutputSchema = dc.schema(ptr + "/output/schema")
		}
		l.Rules = dc.rules(m["rules"])
		if l.MaxTokens > 0 && l.MaxTokensTotal > 0 && l.MaxTokensTotal < l.MaxTokens {
			dc.doc.errorf(ptr+"/max_tokens_total", "max_tokens_total %d is below max_tokens %d", l.MaxTokensTotal, l.MaxTokens)
		}
		s.LLM = l
	case domain.StepGate:
		s.Gate = &domain.GateStep{Input: m["input"], Rules: dc.rules(m["rules"])}
		if _, ok := m["schema"]; ok {
			s.Gate.Schema = dc.schema(ptr + "/schema")
		}
	case domain.StepTransform:
		s.Transform = &domain.TransformStep{Output: m["output"]}
	case domain.StepHTTP:
		h := &domain.HTTPStep{Method: "GET", URL: str(m["url"]), Headers: strMap(m["headers"]), Query: strMap(m["query"]), Body: m["body"], IdempotencyHeader: "Idempotency-Key"}
		if v := str(m["method"]); v != "" {
			h.Method = v
		}
		if v := str(m["idempotency_header"]); v != "" {
			h.IdempotencyHeader = v
		}
		switch es := m["expect_status"].(type) {
		case int64:
			h.ExpectStatus = []int{int(es)}
		case []any:
			for _, c := range es {
				if n, ok := integer(c); ok {
					h.ExpectStatus = append(h.ExpectStatus, n)
				}
			}
		}
		if _, hasBody := m["body"]; hasBody && (h.Method == "GET" || h.Method == "HEAD") {
			dc.doc.errorf(ptr+"/body", "a %s request carries no body; use POST, PUT or PATCH", h.Method)
		}
		dc.headerCase(ptr+"/headers", h.Headers)
		for _, k := range sortedKeys(h.Headers) {
			if strings.EqualFold(k, h.IdempotencyHeader) && h.Method != "GET" && h.Method != "HEAD" {
				dc.doc.keyErrorf(pointerJoin(ptr+"/headers", k), "header %q is the step's idempotency header, which carries the step key on every attempt; a second value beside it would make the receiver's deduplication depend on which one wins (rename the header, or set idempotency_header)", k)
			}
		}
		if g, ok := m["guard"].(map[string]any); ok {
			h.Guard = &domain.HTTPGuard{Method: "GET", URL: str(g["url"]), Headers: strMap(g["headers"]), Query: strMap(g["query"]), DoneIf: str(g["done_if"])}
			if v := str(g["method"]); v != "" {
				h.Guard.Method = v
			}
		}
		if h.Guard != nil && (h.Method == "GET" || h.Method == "HEAD") {
			dc.doc.errorf(ptr+"/guard", "a guard protects a write; a %s request has no side effect to guard", h.Method)
		}
		s.HTTP = h
	case domain.StepExec:
		e := &domain.ExecStep{Command: strList(m["command"]), Env: strMap(m["env"]), Stdin: m["stdin"], Workdir: str(m["workdir"]), Output: domain.ExecOutputText, TransientExitCodes: []int{75}}
		if v := str(m["output"]); v != "" {
			e.Output = v
		}
		if codes, ok := m["transient_exit_codes"].([]any); ok {
			e.TransientExitCodes = []int{}
			for _, c := range codes {
				if n, ok := integer(c); ok {
					e.TransientExitCodes = append(e.TransientExitCodes, n)
				}
			}
		}
		dc.argv(ptr+"/command", e.Command)
		if g, ok := m["guard"].(map[string]any); ok {
			e.Guard = &domain.ExecGuard{Command: strList(g["command"]), Env: strMap(g["env"])}
			dc.argv(ptr+"/guard/command", e.Guard.Command)
		}
		s.Exec = e
	case domain.StepApproval:
		s.Approval = &domain.ApprovalStep{Message: str(m["message"])}
	case domain.StepWait:
		s.Wait = &domain.WaitStep{}
		if _, ok := m["schema"]; ok {
			s.Wait.Schema = dc.schema(ptr + "/schema")
		}
	}
	return s
}

// argv catches the commonest way to smuggle a shell string into an argv list.
func (dc *decoder) argv(ptr string, argv []string) {
	if len(argv) == 0 {
		return
	}
	first := argv[0]
	if len(argv) == 1 && strings.ContainsAny(first, " \t") && !strings.Contains(first, "${{") {
		dc.doc.errorf(ptr+"/0", "%q looks like a shell command line; write the argv as a list, e.g. %s", first, show(strings.Fields(first)))
	}
}

func (dc *decoder) headerCase(ptr string, headers map[string]string) {
	seen := map[string]string{}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		lower := strings.ToLower(k)
		if prev, dup := seen[lower]; dup {
			dc.doc.keyErrorf(pointerJoin(ptr, k), "header %q repeats %q (header names are case-insensitive)", k, prev)
		}
		seen[lower] = k
	}
}

func (dc *decoder) rules(v any) []domain.Rule {
	var out []domain.Rule
	for _, r := range list(v) {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		rule := domain.Rule{Expr: unwrapExpression(str(m["expr"])), Message: str(m["message"]), OnFail: domain.OnFailReject}
		if of := str(m["on_fail"]); of != "" {
			rule.OnFail = domain.OnFail(of)
		}
		out = append(out, rule)
	}
	return out
}

// unwrapExpression accepts a rule written as ${{ expr }} as well as bare CEL.
func unwrapExpression(s string) string {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "${{") && strings.HasSuffix(t, "}}") {
		return strings.TrimSpace(t[3 : len(t)-2])
	}
	return s
}

func (dc *decoder) duration(ptr string) (time.Duration, bool) {
	s, ok := valueAt(dc.doc.root, ptr).(string)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false // the schema pattern reported it
	}
	if d <= 0 {
		dc.doc.errorf(ptr, "must be longer than 0")
		return 0, false
	}
	return d, true
}

func (dc *decoder) retry(ptr string, base domain.RetryPolicy) *domain.RetryPolicy {
	m, ok := valueAt(dc.doc.root, ptr).(map[string]any)
	if !ok {
		return nil
	}
	r := base
	if n, ok := integer(m["max_attempts"]); ok {
		r.MaxAttempts = n
	}
	if d, ok := dc.duration(ptr + "/initial_interval"); ok {
		r.InitialInterval = d
	}
	if d, ok := dc.duration(ptr + "/max_interval"); ok {
		r.MaxInterval = d
	}
	if f := number(m["multiplier"]); f != nil {
		r.Multiplier = *f
	}
	if r.InitialInterval > r.MaxInterval {
		field := "/initial_interval"
		if _, set := m["max_interval"]; set {
			field = "/max_interval"
		}
		dc.doc.errorf(ptr+field, "max_interval %s is shorter than initial_interval %s", r.MaxInterval, r.InitialInterval)
	}
	return &r
}

// schema resolves a schema value: {$ref: path} alone names a file relative to the pipeline;
// anything else is an inline schema.
func (dc *decoder) schema(ptr string) *domain.Schema {
	v := valueAt(dc.doc.root, ptr)
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		if ref, ok := m["$ref"].(string); ok && !strings.HasPrefix(ref, "#") {
			if strings.Contains(ref, "://") {
				dc.doc.errorf(ptr+"/$ref", "remote schema %q is not loaded; keep schemas in the repository beside the pipeline", ref)
				return nil
			}
			abs := filepath.Clean(filepath.Join(dc.dir, filepath.FromSlash(ref)))
			doc, compiled, err := dc.schemas.loadFile(abs)
			if err != nil {
				msg := schemaFileError(doc, err)
				if msg == "" {
					msg = cleanFSError(err, abs, ref)
				}
				dc.doc.errorf(ptr+"/$ref", "schema %s: %s", ref, msg)
				return nil
			}
			return &domain.Schema{Ref: ref, Location: fileURL(abs), Doc: doc, Compiled: compiled}
		}
	}
	loc := fileURL(dc.absPath + strings.ReplaceAll(ptr, "/", "~") + ".schema.json")
	dc.doc.lintInlineSchema(ptr, v)
	compiled, err := gate.CompileSchema(loc, v)
	if err != nil {
		dc.doc.schemaErrors(ptr, loc, err)
		return nil
	}
	return &domain.Schema{Location: loc, Doc: v, Compiled: compiled}
}

func cleanFSError(err error, abs, ref string) string {
	return strings.ReplaceAll(strings.ReplaceAll(err.Error(), "open "+abs+": ", ""), abs, ref)
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func integer(v any) (int, bool) {
	switch n := v.(type) {
	case int64:
		return int(n), true
	case float64:
		if n == float64(int(n)) {
			return int(n), true
		}
	}
	return 0, false
}

func number(v any) *float64 {
	switch n := v.(type) {
	case int64:
		f := float64(n)
		return &f
	case float64:
		return &n
	}
	return nil
}

func strMap(v any) map[string]string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, val := range m {
		switch x := val.(type) {
		case string:
			out[k] = x
		case int64, float64, bool:
			out[k] = fmt.Sprint(x)
		}
	}
	return out
}

func strList(v any) []string {
	var out []string
	for _, x := range list(v) {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
