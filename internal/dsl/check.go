package dsl

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"

	"github.com/pipectl/pipectl/internal/domain"
)

// siteKind says how a string is read.
type siteKind int

const (
	// siteTemplate: text with any number of ${{ }} placeholders.
	siteTemplate siteKind = iota
	// siteExpression: exactly one ${{ }} placeholder (if, for_each, done_if).
	siteExpression
	// siteRule: bare CEL (rules).
	siteRule
)

// site is one string of the pipeline that holds or may hold an expression.
type site struct {
	ptr  string
	text string
	kind siteKind
	step *domain.Step
	// sink says how the placeholders of the site reach a side effect; sensitive names the
	// position in messages.
	sink      sinkKind
	role      argRole
	sensitive string
	// secretsOK: secrets may stand here (headers, query values, env).
	secretsOK bool
	noSecrets bool
	item      bool
	output    bool
	response  bool
	// onlyInputs restricts the site to the inputs variable (idempotency.key).
	onlyInputs bool
	// onlyBody restricts the site to the body variable (triggers.webhook.input).
	onlyBody bool
	want     string
}

// compiledExpr is one placeholder (or rule) that compiled.
type compiledExpr struct {
	ast  *cel.Ast
	src  string
	refs []Reference
	// base is the byte offset of src in the site's text.
	base int
}

// checker compiles every expression of a pipeline and checks scope, references and types.
type checker struct {
	doc     *document
	p       *domain.Pipeline
	x       *Expressions
	deps    map[string]map[string]bool
	steps   map[string]*domain.Step
	secrets map[string]bool
	// exprs holds the compiled placeholders of each template pointer, for the taint rule.
	exprs map[string][]*compiledExpr
	// stepPtr is the JSON pointer of each step.
	stepPtr map[*domain.Step]string
}

func newChecker(doc *document, p *domain.Pipeline, x *Expressions, deps map[string]map[string]bool) *checker {
	c := &checker{doc: doc, p: p, x: x, deps: deps, steps: map[string]*domain.Step{}, secrets: map[string]bool{}, exprs: map[string][]*compiledExpr{}, stepPtr: map[*domain.Step]string{}}
	for i, s := range p.Steps {
		c.stepPtr[s] = pointerJoin("/steps", i)
		if _, dup := c.steps[s.ID]; !dup && s.ID != "" {
			c.steps[s.ID] = s
		}
	}
	for _, s := range p.Secrets {
		c.secrets[s] = true
	}
	return c
}

// sites lists every expression-bearing string of the pipeline with its scope.
func (c *checker) sites() []site {
	var out []site
	if c.p.Idempotency.Key != "" {
		out = append(out, site{ptr: "/idempotency/key", text: c.p.Idempotency.Key, onlyInputs: true})
	}
	if wh := c.p.Triggers.Webhook; wh != nil && wh.Input != nil {
		walkStrings(c.doc, "/triggers/webhook/input", wh.Input, func(p, text string) { out = append(out, site{ptr: p, text: text, onlyBody: true}) })
	}
	for i, s := range c.p.Steps {
		base := pointerJoin("/steps", i)
		at := func(rel string) string { return base + rel }
		item := s.ForEach != ""
		add := func(st site) {
			st.step = s
			if st.kind != siteRule && !st.response && st.ptr != at("/if") && st.ptr != at("/for_each") {
				st.item = item
			}
			out = append(out, st)
		}
		if s.If != "" {
			add(site{ptr: at("/if"), text: s.If, kind: siteExpression, want: "bool"})
		}
		if s.ForEach != "" {
			add(site{ptr: at("/for_each"), text: s.ForEach, kind: siteExpression, want: "list"})
		}
		rules := func(rs []domain.Rule) {
			for j, r := range rs {
				add(site{ptr: at(fmt.Sprintf("/rules/%d/expr", j)), text: r.Expr, kind: siteRule, output: true, want: "bool"})
			}
		}
		values := func(ptr string, v any) {
			walkStrings(c.doc, ptr, v, func(p, text string) { add(site{ptr: p, text: text}) })
		}
		stringMap := func(ptr string, m map[string]string, kind sinkKind, what string) {
			for _, k := range sortedKeys(m) {
				if strings.Contains(k, "${{") {
					// Names are sent as written: a placeholder there would be a literal "${{".
					c.errorIn(pointerJoin(ptr, k), 0, "%s name is never rendered: ${{ }} in it would be sent as written; write the name in the spec", strings.TrimSuffix(fmt.Sprintf(what, ""), " "))
				}
				st := site{ptr: pointerJoin(ptr, k), text: m[k], sink: kind, secretsOK: true, sensitive: fmt.Sprintf(what, k)}
				if kind == sinkEnv {
					st.role = envRole(k)
				}
				add(st)
			}
		}
		argv := func(ptr string, command []string, what string) bool {
			roles, stdinCode := commandRoles(command)
			for j, a := range command {
				add(site{ptr: pointerJoin(ptr, j), text: a, sink: sinkArgv, role: roles[j], sensitive: fmt.Sprintf("%s %d", what, j)})
			}
			return stdinCode
		}
		switch {
		case s.LLM != nil:
			add(site{ptr: at("/prompt"), text: s.LLM.Prompt, noSecrets: true})
			if s.LLM.System != "" {
				add(site{ptr: at("/system"), text: s.LLM.System, noSecrets: true})
			}
			rules(s.LLM.Rules)
		case s.Gate != nil:
			values(at("/input"), s.Gate.Input)
			rules(s.Gate.Rules)
		case s.Transform != nil:
			values(at("/output"), s.Transform.Output)
		case s.HTTP != nil:
			h := s.HTTP
			add(site{ptr: at("/url"), text: h.URL, sink: sinkURL, sensitive: "the http url"})
			stringMap(at("/headers"), h.Headers, sinkHeader, "the http header %s")
			stringMap(at("/query"), h.Query, sinkQuery, "the http query parameter %s")
			if text, ok := h.Body.(string); ok && strings.Contains(text, "${{") && !wholePlaceholder(text) {
				// Text around placeholders: the spec writes the body's format (JSON, a form,
				// XML) and the data is spliced into it, where a quote or an "&" changes it.
				add(site{ptr: at("/body"), text: text, sink: sinkBody, sensitive: "the http body written as text"})
			} else {
				values(at("/body"), h.Body)
			}
			if g := h.Guard; g != nil {
				add(site{ptr: at("/guard/url"), text: g.URL, sink: sinkURL, sensitive: "the http guard url"})
				stringMap(at("/guard/headers"), g.Headers, sinkHeader, "the http guard header %s")
				stringMap(at("/guard/query"), g.Query, sinkQuery, "the http guard query parameter %s")
				add(site{ptr: at("/guard/done_if"), text: g.DoneIf, kind: siteExpression, response: true, want: "bool"})
			}
		case s.Exec != nil:
			e := s.Exec
			stdinCode := argv(at("/command"), e.Command, "exec argument")
			stringMap(at("/env"), e.Env, sinkEnv, "the exec env %s")
			if e.Workdir != "" {
				add(site{ptr: at("/workdir"), text: e.Workdir, sink: sinkWorkdir, sensitive: "the exec workdir"})
			}
			walkStrings(c.doc, at("/stdin"), e.Stdin, func(p, text string) {
				st := site{ptr: p, text: text}
				if stdinCode {
					st.sink, st.sensitive = sinkCode, fmt.Sprintf("the stdin of %s is the code it runs", programName(e.Command[0]))
				}
				add(st)
			})
			if g := e.Guard; g != nil {
				argv(at("/guard/command"), g.Command, "exec guard argument")
				stringMap(at("/guard/env"), g.Env, sinkEnv, "the exec guard env %s")
			}
		case s.Approval != nil:
			if s.Approval.Message != "" {
				add(site{ptr: at("/message"), text: s.Approval.Message})
			}
		}
	}
	return out
}

// walkStrings calls fn for every string inside a free-form value. Keys are literal: a
// placeholder in a key is reported, since the key would not be evaluated.
func walkStrings(d *document, ptr string, v any, fn func(ptr, text string)) {
	switch x := v.(type) {
	case string:
		fn(ptr, x)
	case []any:
		for i, e := range x {
			walkStrings(d, pointerJoin(ptr, i), e, fn)
		}
	case map[string]any:
		for _, k := range sortedKeys(x) {
			child := pointerJoin(ptr, k)
			if strings.Contains(k, "${{") {
				d.keyErrorf(child, "placeholders are not evaluated in keys; move %q into a value", k)
			}
			walkStrings(d, child, x[k], fn)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := keys(m)
	sort.Strings(ks)
	return ks
}

// check compiles and checks every site; it returns the sites for the taint rule.
func (c *checker) check() []site {
	all := c.sites()
	for _, st := range all {
		if st.kind == siteRule {
			c.compileAt(st, st.text, 0)
			continue
		}
		t, err := ParseTemplate(st.text)
		if err != nil {
			te := err.(*TemplateError)
			c.errorIn(st.ptr, te.Offset, "%s", te.Msg)
			continue
		}
		if st.kind == siteExpression && !t.Single() {
			// Text around the placeholder is reported by the pipeline schema's pattern; two
			// placeholders side by side pass that pattern and are caught here.
			trimmed := strings.TrimSpace(st.text)
			if strings.HasPrefix(trimmed, "${{") && strings.HasSuffix(trimmed, "}}") {
				c.errorIn(st.ptr, 0, "must be a single ${{ expression }}")
			}
			continue
		}
		for _, ph := range t.Placeholders {
			c.compileAt(st, ph.Expr, ph.ExprStart)
		}
	}
	return all
}

// compileAt compiles one expression whose source starts at byte offset base of the site's text.
func (c *checker) compileAt(st site, src string, base int) {
	compiled, issues := c.x.Compile(src)
	for _, is := range issues {
		c.errorIn(st.ptr, base+is.Offset, "%s", is.Msg)
	}
	if compiled == nil {
		return
	}
	ce := &compiledExpr{ast: compiled, src: src, refs: References(compiled, src), base: base}
	ok := true
	for _, r := range ce.refs {
		if msg := c.scopeError(st, r); msg != "" {
			c.errorIn(st.ptr, base+r.Offset, "%s", msg)
			ok = false
		}
	}
	if ok {
		c.checkType(st, compiled, base)
	}
	c.exprs[st.ptr] = append(c.exprs[st.ptr], ce)
}

func (c *checker) checkType(st site, compiled *cel.Ast, base int) {
	t := compiled.OutputType()
	if t == cel.DynType || t.Kind() == cel.DynKind {
		return
	}
	switch st.want {
	case "bool":
		if t != cel.BoolType {
			c.errorIn(st.ptr, base, "must be a boolean expression, but it yields %s", t)
		}
	case "list":
		if t.Kind() != cel.ListKind {
			c.errorIn(st.ptr, base, "for_each needs a list, but the expression yields %s", t)
		}
	}
}

// scopeError explains why a reference is not allowed at a site, or returns "".
func (c *checker) scopeError(st site, r Reference) string {
	if st.onlyBody != (r.Root == VarBody) {
		if st.onlyBody {
			return fmt.Sprintf("triggers.webhook.input maps the delivery's body to the run input; only body is in scope, not %s", r.Root)
		}
		return "body is only in scope in triggers.webhook.input"
	}
	if st.onlyInputs && r.Root != VarInputs {
		return fmt.Sprintf("idempotency.key may use only inputs, not %s", r.Root)
	}
	switch r.Root {
	case VarSteps:
		return c.stepRefError(st, r)
	case VarRun:
		if len(r.Path) == 0 || r.Path[0].IsIndex || !contains(RunFields, r.Path[0].Field) {
			return fmt.Sprintf("run has the fields %s", strings.Join(RunFields, ", "))
		}
	case VarItem, VarIndex:
		if !st.item {
			if st.step != nil && st.step.ForEach != "" {
				return fmt.Sprintf("%s is not in scope in if or for_each: they are evaluated once, before the items", r.Root)
			}
			return fmt.Sprintf("%s is only in scope inside a step with for_each", r.Root)
		}
	case VarSecrets:
		if len(r.Path) == 0 || r.Path[0].IsIndex {
			return "name the secret, e.g. secrets.API_TOKEN"
		}
		name := r.Path[0].Field
		if st.noSecrets {
			return fmt.Sprintf("secrets.%s may not appear in an llm prompt or system text: it would be sent to the model provider", name)
		}
		if !c.secrets[name] {
			return fmt.Sprintf("secret %s is not declared in the pipeline's secrets list", name)
		}
	case VarOutput:
		if !st.output {
			return "output is only in scope in rules"
		}
	case VarResponse:
		if !st.response {
			return "response is only in scope in guard.done_if"
		}
	}
	return ""
}

func (c *checker) stepRefError(st site, r Reference) string {
	if len(r.Path) == 0 || r.Path[0].IsIndex {
		return "name the step, e.g. steps.fetch.output"
	}
	id := r.Path[0].Field
	target, known := c.steps[id]
	if !known {
		msg := fmt.Sprintf("unknown step %q", id)
		if best := closest(id, keys(c.steps)); best != "" {
			msg += fmt.Sprintf("; did you mean %q?", best)
		}
		return msg
	}
	if len(r.Path) < 2 || r.Path[1].Field != "output" || r.Path[1].IsIndex {
		return fmt.Sprintf("steps.%s has one field, output: write steps.%s.output", id, id)
	}
	if st.step == nil {
		return "steps are not in scope here"
	}
	if target == st.step {
		return fmt.Sprintf("step %q cannot read its own output", id)
	}
	if c.deps != nil && !c.deps[st.step.ID][id] {
		return fmt.Sprintf("step %q reads steps.%s but does not depend on it; add %q to needs", st.step.ID, id, id)
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// errorIn reports an error at a byte offset inside the string value at ptr.
func (c *checker) errorIn(ptr string, off int, format string, args ...any) {
	line, col := c.positionIn(ptr, off)
	c.doc.errorAt(line, col, fieldPath(ptr), format, args...)
}

// positionIn maps a byte offset in a string value to a file position. The value's text may be
// quoted, folded or indented in the file; when the line holding the offset cannot be found
// verbatim, the value's own position is the answer.
func (c *checker) positionIn(ptr string, off int) (int, int) {
	node := c.doc.values[ptr]
	if node == nil {
		return c.doc.position(ptr)
	}
	value := node.Value
	if off > len(value) {
		off = len(value)
	}
	lineStart := strings.LastIndexByte(value[:off], '\n') + 1
	lineEnd := strings.IndexByte(value[lineStart:], '\n')
	if lineEnd < 0 {
		lineEnd = len(value) - lineStart
	}
	valueLine := value[lineStart : lineStart+lineEnd]
	k := strings.Count(value[:lineStart], "\n")
	src := c.doc.src
	from := offsetOf(src, node.Line, node.Column)
	if k > 0 {
		from = offsetOf(src, node.Line+1, 1)
	}
	if valueLine == "" {
		return node.Line, node.Column
	}
	// Search a bounded window: the value's line in the file is at or after its start.
	window := string(src[from:min(len(src), from+len(value)*2+4096)])
	i := strings.Index(window, valueLine)
	if i < 0 {
		return node.Line, node.Column
	}
	l, col := lineColOf(src, from+i)
	return l, col + utf8.RuneCountInString(value[lineStart:off])
}

// wholePlaceholder reports whether a template is one placeholder and nothing else, so that the
// value it renders is the whole text.
func wholePlaceholder(text string) bool {
	t, err := ParseTemplate(text)
	return err == nil && t.Single()
}
