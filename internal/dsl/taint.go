package dsl

import (
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
)

// maxTaintDepth bounds how far the analysis follows values through steps and schemas.
const maxTaintDepth = 32

// sinkKind says how a site's placeholders reach a side effect.
type sinkKind int

const (
	sinkNone sinkKind = iota
	sinkURL
	sinkArgv
	sinkHeader
	sinkQuery
	sinkEnv
	sinkWorkdir
	// sinkCode is text an interpreter runs (its stdin, when it reads its program there).
	sinkCode
	// sinkBody is an http body written as text around placeholders.
	sinkBody
)

// origin is where an untrusted value was last checked by a schema, or where it entered
// without any check.
type origin struct {
	// source names the kind of data for messages: "run input", "model-proposed value", ...
	source string
	label  string
	ref    domain.ValueRef
	// schema is the compiled schema that checked the value (nil: nothing did); path leads to
	// the value below the schema's root, and schemaAt names the schema in the spec.
	schema   *jsonschema.Schema
	schemaAt string
	path     []Segment
	// inner is what a gate step received: its schema or these keep the value safe.
	inner       []origin
	transformed bool
	// number is set when the value reaches the sink only through a number computed from it.
	number NumberUse
	// query is set when text the spec puts before the value on its way (a transform's
	// "?user=${{ x }}", an expression's "?q=" + x) may place it in a url's query string.
	query bool
	// numeric is set for a value that is a number by nature (an http status, an exit code).
	numeric bool
	via     []string
}

// checkTaint enforces the gate invariant on every site: untrusted data (inputs, model
// proposals, wait payloads, exec and http outputs, approval notes) reaches a url, header,
// query value, argv, env or workdir only where the schema that last checked it makes it safe
// for that position; code positions take no data; secrets reach only headers, query values
// and env. It records what it proved in the pipeline's sink plan for the run-time check.
func (c *checker) checkTaint(sites []site) {
	for _, st := range sites {
		c.checkSecrets(st)
		if st.sink == sinkNone {
			continue
		}
		t, err := ParseTemplate(st.text)
		if err != nil {
			continue // reported by check
		}
		exprs := c.exprs[st.ptr]
		if len(exprs) != len(t.Placeholders) {
			continue // a placeholder failed to compile, which is reported already
		}
		for i, ph := range t.Placeholders {
			ce := exprs[i]
			class, desc := st.classAt(t, i)
			if class == "" {
				continue
			}
			if class == domain.SinkCode {
				how := `pass values through env and read them as "$NAME" (quoted), or as arguments after the code`
				if st.sink == sinkEnv {
					how = "write the value in the spec itself, and pass data in a variable the program reads as data"
				}
				c.errorIn(st.ptr, ph.Start, "%s: no placeholder may stand in code, since any data in it would run; %s", desc, how)
				continue
			}
			check := domain.SinkCheck{Field: fieldPath(st.ptr), Expr: ce.src, Class: class}
			if st.sink == sinkURL {
				check.Before = piecesBefore(t, i, exprs)
			}
			for _, fl := range Flows(ce.ast, ce.src) {
				for _, o := range markQuery(c.origins(st.step, fl.Reference, fl.Transformed, fl.Number, nil, 0), fl.AfterQueryMark) {
					if !o.number.Matters(class) {
						continue // only a number reaches here, and any number is safe text in this position
					}
					if flows, culprit, bad := c.judgeOrigin(o, class); bad != "" {
						how := ""
						switch {
						case culprit.numeric:
							how = ", a number the other side chooses,"
						case o.number != NotNumber:
							how = ", as a number computed from it (a count, a conversion or arithmetic),"
						}
						where := desc
						if culprit.query && class == domain.SinkURLPath {
							where = st.sensitive + `'s query string (text on its way puts it after a "?" or "#")`
						}
						c.errorIn(st.ptr, ce.base+fl.Offset, "%s%s reaches %s, but %s", culprit.name(fl.Reference), how, where, bad)
					} else {
						check.Flows = append(check.Flows, flows...)
					}
				}
			}
			if len(check.Flows) > 0 && st.step != nil {
				if c.p.Sinks == nil {
					c.p.Sinks = map[string][]domain.SinkCheck{}
				}
				c.p.Sinks[st.step.ID] = append(c.p.Sinks[st.step.ID], check)
			}
		}
	}
}

// checkSecrets refuses secrets anywhere but headers, query values and env (and decisions,
// whose boolean result carries no secret text).
func (c *checker) checkSecrets(st site) {
	if st.secretsOK || st.noSecrets || st.onlyBody || st.onlyInputs || st.kind == siteRule {
		return
	}
	t, err := ParseTemplate(st.text)
	if err != nil {
		return
	}
	exprs := c.exprs[st.ptr]
	for i, ce := range exprs {
		if st.sink == sinkURL && i < len(t.Placeholders) && len(exprs) == len(t.Placeholders) {
			if class, _ := st.classAt(t, i); class == domain.SinkURLQuery {
				continue
			}
		}
		// What flows into the result carries the secret, a number computed from it too
		// (int(secrets.PIN) is the PIN); what only decides (a comparison, a condition) does not.
		for _, fl := range Flows(ce.ast, ce.src) {
			r := fl.Reference
			if r.Root != VarSecrets || len(r.Path) == 0 {
				continue
			}
			c.errorIn(st.ptr, ce.base+r.Offset, "secrets.%s may reach only http headers, http query values (the query map or the url's query string) and exec env, where it is sent and never stored: anywhere else it would be stored, logged or sent as data", r.Path[0].Field)
		}
	}
}

// classAt classifies the i-th placeholder of a sink site and describes its position.
func (st site) classAt(t Template, i int) (domain.SinkClass, string) {
	literal := literalPrefix(t, i, st.sink == sinkURL)
	switch st.sink {
	case sinkURL:
		desc := map[domain.SinkClass]string{domain.SinkFixed: "'s scheme, host and port", domain.SinkURLPath: "'s path", domain.SinkURLQuery: "'s query string"}
		class := domain.URLPosition(literal)
		return class, st.sensitive + desc[class]
	case sinkArgv:
		switch st.role {
		case roleCode:
			return domain.SinkCode, st.sensitive + " is code an interpreter runs"
		case roleProgram:
			return domain.SinkFixed, st.sensitive + ", which chooses the program, script or host that runs"
		}
		if strings.Contains(literal, "://") {
			// A url by its own text (curl https://api.example.com/${{ id }}): the program
			// sends it, so a value in it has the url's rules, host, path and query alike.
			class := domain.URLPosition(literal)
			desc := map[domain.SinkClass]string{domain.SinkFixed: "the scheme, host and port", domain.SinkURLPath: "the path", domain.SinkURLQuery: "the query string"}
			return class, st.sensitive + ", in " + desc[class] + " of the url it holds"
		}
		if strings.HasSuffix(literal, "/") {
			// A path segment by its own text (rm -rf /srv/tenants/${{ t }}): "..", "" or
			// a "/" in the value would name another file than the one the spec means.
			return domain.SinkPath, st.sensitive + `, a path segment after "/"`
		}
		if literal == "" {
			return domain.SinkArg, st.sensitive
		}
		return domain.SinkArgTail, st.sensitive
	case sinkHeader:
		return domain.SinkHeader, st.sensitive
	case sinkQuery:
		return domain.SinkQueryValue, st.sensitive
	case sinkEnv:
		switch st.role {
		case roleCode:
			return domain.SinkCode, st.sensitive + ", which the program runs as code"
		case roleProgram:
			return domain.SinkFixed, st.sensitive + ", which chooses the programs, libraries or modules that run"
		}
		return domain.SinkEnv, st.sensitive
	case sinkWorkdir:
		return domain.SinkPath, st.sensitive
	case sinkCode:
		return domain.SinkCode, st.sensitive
	case sinkBody:
		return domain.SinkBodyText, st.sensitive
	}
	return "", ""
}

// literalPrefix is the spec's own text before the i-th placeholder: only that text decides
// the position, since the values before it are themselves kept safe for theirs.
func literalPrefix(t Template, i int, url bool) string {
	var b strings.Builder
	at := 0
	for k := 0; k < i; k++ {
		b.WriteString(t.Text[at:t.Placeholders[k].Start])
		at = t.Placeholders[k].End
		if url && b.Len() == 0 {
			// A url that starts with a placeholder takes its scheme and host from it (a value
			// the spec lists); the run-time check places later values by the rendered text.
			b.WriteString("placeholder://")
		}
	}
	b.WriteString(t.Text[at:t.Placeholders[i].Start])
	return b.String()
}

// piecesBefore is the template up to its i-th placeholder, as text and expressions.
func piecesBefore(t Template, i int, exprs []*compiledExpr) []domain.TemplatePiece {
	var out []domain.TemplatePiece
	at := 0
	for k := 0; k < i; k++ {
		if lit := t.Text[at:t.Placeholders[k].Start]; lit != "" {
			out = append(out, domain.TemplatePiece{Text: lit})
		}
		out = append(out, domain.TemplatePiece{Expr: exprs[k].src})
		at = t.Placeholders[k].End
	}
	if lit := t.Text[at:t.Placeholders[i].Start]; lit != "" {
		out = append(out, domain.TemplatePiece{Text: lit})
	}
	return out
}

func (o origin) name(r Reference) string {
	via := ""
	if len(o.via) > 0 {
		via = " (via " + strings.Join(o.via, ", ") + ")"
	} else if r.String() != o.label {
		via = " (via " + r.String() + ")"
	}
	return o.source + " " + o.label + via
}

// judgeOrigin decides whether an origin is safe in class; it returns the flows to check again
// at run time, or the origin that is not safe and why.
func (c *checker) judgeOrigin(o origin, class domain.SinkClass) ([]domain.SinkFlow, origin, string) {
	flow := domain.SinkFlow{Origin: o.ref, Source: o.source, Transformed: o.transformed}
	if o.query && class == domain.SinkURLPath {
		// The spec's text on the way puts the value after a "?" or "#".
		class, flow.Class = domain.SinkURLQuery, domain.SinkURLQuery
	}
	if weakenTaint {
		return []domain.SinkFlow{flow}, o, ""
	}
	var why string
	if o.schema != nil {
		v := judge(o.schema, o.path, class)
		switch {
		case v.ok && o.transformed && !v.constraint.Finite():
			why = fmt.Sprintf("it is computed from the value, and through a computation only a value from a finite set (enum, const, boolean) keeps what %s proves (pass the value as it is, or narrow it with enum)", o.schemaAt)
		case v.ok:
			flow.Constraint = v.constraint
			return []domain.SinkFlow{flow}, o, ""
		default:
			why = fmt.Sprintf("its schema at %s %s does not make it safe there: %s", o.schemaAt, v.where, v.why)
		}
	} else {
		why = fmt.Sprintf("no schema checks it (%s is never checked on its way in; pass it through a gate step whose schema constrains it)", article(o.source))
	}
	if o.inner == nil {
		return nil, o, why + "; " + remedy(class)
	}
	// A gate whose own schema does not settle it: what it received must be safe by itself.
	var out []domain.SinkFlow
	for _, in := range o.inner {
		in.via = append(append([]string{}, o.via...), o.label)
		flows, culprit, bad := c.judgeOrigin(in, class)
		if bad != "" {
			bad = strings.TrimSuffix(bad, "; "+remedy(class)) + "; nor does the gate " + o.label + ": " + why + "; " + remedy(class)
			return nil, culprit, bad
		}
		out = append(out, flows...)
	}
	return out, o, ""
}

// origins resolves a reference to the untrusted values behind it.
func (c *checker) origins(from *domain.Step, r Reference, transformed bool, number NumberUse, via []string, depth int) []origin {
	// The outermost number wins: a count of a value stays a count whatever the value is.
	at := func(fl Flow) NumberUse {
		if number != NotNumber {
			return number
		}
		return fl.Number
	}
	if depth > maxTaintDepth {
		return nil
	}
	switch r.Root {
	case VarInputs:
		return []origin{{source: "run input", label: r.String(), ref: domain.ValueRef{Path: valuePath(r.Path)},
			schema: compiledOf(c.p.Inputs), schemaAt: "inputs", path: r.Path, transformed: transformed, number: number, via: via}}
	case VarRun:
		if len(r.Path) == 0 || r.Path[0].Field != "idempotency_key" || c.p.Idempotency.Key == "" {
			return nil
		}
		var out []origin
		for _, ce := range c.exprs["/idempotency/key"] {
			for _, fl := range Flows(ce.ast, ce.src) {
				// The key is trimmed and made text: a computation.
				out = append(out, c.origins(nil, fl.Reference, true, at(fl), append(via, "run.idempotency_key"), depth+1)...)
			}
		}
		return out
	case VarItem:
		if from == nil || from.ForEach == "" {
			return nil
		}
		var out []origin
		for _, ce := range c.exprs[c.stepPtr[from]+"/for_each"] {
			for _, fl := range Flows(ce.ast, ce.src) {
				p := append(append(append([]Segment{}, fl.Path...), Segment{IsIndex: true, Dynamic: true}), r.Path...)
				out = append(out, c.origins(from, Reference{Root: fl.Root, Path: p}, transformed || fl.Transformed, at(fl), append(via, "item"), depth+1)...)
			}
		}
		return out
	case VarIndex:
		// The index is a count: how long the list is, which the data may choose.
		if from == nil || from.ForEach == "" {
			return nil
		}
		var out []origin
		for _, ce := range c.exprs[c.stepPtr[from]+"/for_each"] {
			for _, fl := range Flows(ce.ast, ce.src) {
				num := Unsigned
				if number != NotNumber {
					num = number
				}
				out = append(out, c.origins(from, fl.Reference, true, num, append(via, "index"), depth+1)...)
			}
		}
		return out
	case VarSteps:
		if len(r.Path) < 2 || r.Path[0].IsIndex {
			return nil
		}
		target := c.steps[r.Path[0].Field]
		if target == nil {
			return nil
		}
		return c.stepOrigins(target, r.Path[2:], transformed, number, via, depth)
	}
	return nil
}

func (c *checker) stepOrigins(target *domain.Step, rest []Segment, transformed bool, number NumberUse, via []string, depth int) []origin {
	ptr := c.stepPtr[target]
	label := "steps." + target.ID + ".output" + segmentsString(rest)
	ref := domain.ValueRef{Step: target.ID, Path: valuePath(rest)}
	inner := rest
	if target.ForEach != "" && len(inner) > 0 && inner[0].IsIndex {
		inner = inner[1:]
	}
	field := ""
	if len(inner) > 0 && !inner[0].IsIndex {
		field = inner[0].Field
	}
	unchecked := func(source string) []origin {
		return []origin{{source: source, label: label, ref: ref, transformed: transformed, number: number, via: via}}
	}
	switch target.Type {
	case domain.StepLLM:
		return []origin{{source: "model-proposed value", label: label, ref: ref, schema: compiledOf(target.LLM.OutputSchema),
			schemaAt: fieldPath(ptr + "/output/schema"), path: inner, transformed: transformed, number: number, via: via}}
	case domain.StepWait:
		return []origin{{source: "wait payload", label: label, ref: ref, schema: compiledOf(target.Wait.Schema),
			schemaAt: fieldPath(ptr + "/schema"), path: inner, transformed: transformed, number: number, via: via}}
	case domain.StepGate:
		received := c.valueOrigins(target, ptr+"/input", target.Gate.Input, inner, transformed, number, via, depth+1)
		if len(received) == 0 {
			return nil
		}
		return []origin{{source: "gated value", label: label, ref: ref, schema: compiledOf(target.Gate.Schema),
			schemaAt: fieldPath(ptr + "/schema"), path: inner, inner: received, transformed: transformed, number: number, via: via}}
	case domain.StepTransform:
		return c.valueOrigins(target, ptr+"/output", target.Transform.Output, inner, transformed, number, append(via, label), depth+1)
	case domain.StepExec:
		if field == "exit_code" {
			// A number the program (and whatever drives it) chooses: -1 when it was killed.
			return asNumber(unchecked("exec exit code"), number, Signed)
		}
		return unchecked("exec output")
	case domain.StepHTTP:
		if field == "status" {
			// A number the server chooses, 100 to 999.
			return asNumber(unchecked("http status"), number, Unsigned)
		}
		return unchecked("http response")
	case domain.StepApproval:
		if field == "decision" {
			return nil
		}
		return unchecked("approval note")
	}
	return nil
}

// valueOrigins follows a path into a free-form value (transform output, gate input).
func (c *checker) valueOrigins(step *domain.Step, ptr string, v any, rest []Segment, transformed bool, number NumberUse, via []string, depth int) []origin {
	if depth > maxTaintDepth {
		return nil
	}
	switch x := v.(type) {
	case string:
		t, err := ParseTemplate(x)
		if err != nil {
			return nil
		}
		var out []origin
		for i, ce := range c.exprs[ptr] {
			for _, fl := range Flows(ce.ast, ce.src) {
				r := fl.Reference
				if t.Single() {
					r.Path = append(append([]Segment{}, r.Path...), rest...)
				}
				num := number
				if num == NotNumber {
					num = fl.Number
				}
				got := c.origins(step, r, transformed || fl.Transformed, num, via, depth+1)
				out = append(out, markQuery(got, fl.AfterQueryMark || afterQueryMark(t, i, len(c.exprs[ptr])))...)
			}
		}
		return out
	case map[string]any:
		if len(rest) > 0 && !rest[0].Dynamic {
			if rest[0].IsIndex {
				return nil
			}
			child, ok := x[rest[0].Field]
			if !ok {
				return nil
			}
			return c.valueOrigins(step, pointerJoin(ptr, rest[0].Field), child, rest[1:], transformed, number, via, depth+1)
		}
		var out []origin
		for _, k := range sortedKeys(x) {
			out = append(out, c.valueOrigins(step, pointerJoin(ptr, k), x[k], tail(rest), transformed || len(rest) == 0, number, via, depth+1)...)
		}
		return out
	case []any:
		if len(rest) > 0 && rest[0].IsIndex && !rest[0].Dynamic {
			if rest[0].Index < 0 || rest[0].Index >= len(x) {
				return nil
			}
			return c.valueOrigins(step, pointerJoin(ptr, rest[0].Index), x[rest[0].Index], rest[1:], transformed, number, via, depth+1)
		}
		var out []origin
		for i, e := range x {
			out = append(out, c.valueOrigins(step, pointerJoin(ptr, i), e, tail(rest), transformed || len(rest) == 0, number, via, depth+1)...)
		}
		return out
	}
	return nil
}

func compiledOf(s *domain.Schema) *jsonschema.Schema {
	if s == nil {
		return nil
	}
	sch, _ := s.Compiled.(*jsonschema.Schema)
	return sch
}

func valuePath(path []Segment) []domain.PathSegment {
	out := make([]domain.PathSegment, len(path))
	for i, s := range path {
		out[i] = domain.PathSegment{Field: s.Field, Index: s.Index, IsIndex: s.IsIndex, Every: s.Dynamic}
	}
	return out
}

func tail(s []Segment) []Segment {
	if len(s) == 0 {
		return nil
	}
	return s[1:]
}

func segmentsString(path []Segment) string {
	var b strings.Builder
	for _, s := range path {
		b.WriteString(s.String())
	}
	return b.String()
}

// markQuery marks origins (and what a gate among them received) as placed after a "?" or "#".
func markQuery(os []origin, mark bool) []origin {
	if !mark {
		return os
	}
	for i := range os {
		os[i].query = true
		os[i].inner = markQuery(append([]origin(nil), os[i].inner...), true)
	}
	return os
}

// afterQueryMark reports whether a template's own text before its i-th placeholder holds a
// "?" or "#" (when its n compiled expressions line up with its placeholders; otherwise, to be
// safe, whether any of its text does).
func afterQueryMark(t Template, i, n int) bool {
	if n != len(t.Placeholders) || i >= n {
		return strings.ContainsAny(t.Text, "?#")
	}
	return strings.ContainsAny(literalPrefix(t, i, false), "?#")
}

// asNumber marks origins that are numbers by nature (a status, an exit code) with the kind of
// number they are, unless a computation already made them one.
func asNumber(os []origin, number, kind NumberUse) []origin {
	for i := range os {
		if number == NotNumber {
			os[i].number, os[i].numeric = kind, true
		}
	}
	return os
}
