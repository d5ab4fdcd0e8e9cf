package dsl

import (
	"fmt"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
)

// maxTaintDepth bounds how far the analysis follows values through transform and gate steps.
const maxTaintDepth = 32

// exposure is model-proposed data that reaches a sensitive position without a constraining schema.
type exposure struct {
	origin     string
	schemaAt   string
	schemaPath string
}

// checkTaint enforces the gate invariant: values derived from llm outputs or wait payloads may
// reach a URL, header, query, command, env or workdir only through schema fields that constrain
// them. The analysis follows references through transform and gate steps and for_each items.
func (c *checker) checkTaint(sites []site) {
	for _, st := range sites {
		if st.sensitive == "" {
			continue
		}
		for _, ce := range c.exprs[st.ptr] {
			if ScalarResult(ce.ast) {
				continue
			}
			for _, r := range ce.refs {
				for _, e := range c.exposures(st.step, r.Root, r.Path, 0) {
					via := ""
					if r.String() != e.origin {
						via = fmt.Sprintf(" (via %s)", r)
					}
					c.errorIn(st.ptr, ce.base+r.Offset,
						"model-proposed value %s%s reaches %s, but its schema at %s%s does not constrain it: use enum, const, a string pattern or format, or a boolean, integer or number type",
						e.origin, via, st.sensitive, e.schemaAt, e.schemaPath)
				}
			}
		}
	}
}

// exposures returns the unconstrained model-proposed values behind a reference.
func (c *checker) exposures(from *domain.Step, root string, path []Segment, depth int) []exposure {
	if depth > maxTaintDepth {
		return nil
	}
	switch root {
	case VarSteps:
		if len(path) < 2 || path[0].IsIndex {
			return nil
		}
		target := c.steps[path[0].Field]
		if target == nil {
			return nil
		}
		return c.stepExposures(target, path[2:], depth)
	case VarItem:
		if from == nil || from.ForEach == "" {
			return nil
		}
		var out []exposure
		for _, ce := range c.exprs[c.stepPtr[from]+"/for_each"] {
			if ScalarResult(ce.ast) {
				continue
			}
			for _, r := range ce.refs {
				p := append(append(append([]Segment{}, r.Path...), Segment{IsIndex: true, Dynamic: true}), path...)
				out = append(out, c.exposures(from, r.Root, p, depth+1)...)
			}
		}
		return out
	}
	return nil
}

func (c *checker) stepExposures(target *domain.Step, rest []Segment, depth int) []exposure {
	ptr := c.stepPtr[target]
	origin := "steps." + target.ID + ".output" + segmentsString(rest)
	if target.ForEach != "" && len(rest) > 0 && rest[0].IsIndex {
		rest = rest[1:]
	}
	switch target.Type {
	case domain.StepLLM:
		return schemaExposure(target.LLM.OutputSchema, rest, origin, fieldPath(ptr+"/output/schema"))
	case domain.StepWait:
		return schemaExposure(target.Wait.Schema, rest, origin, fieldPath(ptr+"/schema"))
	case domain.StepGate:
		inner := c.valueExposures(target, ptr+"/input", target.Gate.Input, rest, depth+1)
		if len(inner) == 0 || (target.Gate.Schema != nil && len(schemaExposure(target.Gate.Schema, rest, origin, "")) == 0) {
			return nil
		}
		return inner
	case domain.StepTransform:
		return c.valueExposures(target, ptr+"/output", target.Transform.Output, rest, depth+1)
	}
	return nil
}

// valueExposures follows a path into a free-form value (transform output, gate input).
func (c *checker) valueExposures(step *domain.Step, ptr string, v any, rest []Segment, depth int) []exposure {
	if depth > maxTaintDepth {
		return nil
	}
	switch x := v.(type) {
	case string:
		t, err := ParseTemplate(x)
		if err != nil {
			return nil
		}
		var out []exposure
		for _, ce := range c.exprs[ptr] {
			if ScalarResult(ce.ast) {
				continue
			}
			for _, r := range ce.refs {
				p := r.Path
				if t.Single() {
					p = append(append([]Segment{}, r.Path...), rest...)
				}
				out = append(out, c.exposures(step, r.Root, p, depth+1)...)
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
			return c.valueExposures(step, pointerJoin(ptr, rest[0].Field), child, rest[1:], depth+1)
		}
		var out []exposure
		for _, k := range sortedKeys(x) {
			out = append(out, c.valueExposures(step, pointerJoin(ptr, k), x[k], tail(rest), depth+1)...)
		}
		return out
	case []any:
		if len(rest) > 0 && rest[0].IsIndex && !rest[0].Dynamic {
			if rest[0].Index < 0 || rest[0].Index >= len(x) {
				return nil
			}
			return c.valueExposures(step, pointerJoin(ptr, rest[0].Index), x[rest[0].Index], rest[1:], depth+1)
		}
		var out []exposure
		for i, e := range x {
			out = append(out, c.valueExposures(step, pointerJoin(ptr, i), e, tail(rest), depth+1)...)
		}
		return out
	}
	return nil
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

func schemaExposure(s *domain.Schema, rest []Segment, origin, schemaAt string) []exposure {
	if s == nil {
		return nil // the schema failed to load, which is reported already
	}
	if ok, where := constrained(s.Doc, s.Doc, rest, "", 0); !ok {
		if where == "" {
			where = "/"
		}
		return []exposure{{origin: origin, schemaAt: schemaAt, schemaPath: " " + where}}
	}
	return nil
}

// constrained reports whether every value the schema admits at path is a constrained scalar:
// an enum or const, a boolean, integer or number, or a string with a pattern or format.
// It returns the schema location it judged.
func constrained(root, s any, path []Segment, where string, depth int) (bool, string) {
	if depth > maxTaintDepth {
		return false, where
	}
	switch b := s.(type) {
	case bool:
		return !b, where // false admits nothing
	case map[string]any:
		if ref, ok := b["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
			if ok, _ := constrained(root, valueAt(root, ref[1:]), path, where, depth+1); ok {
				return true, where
			}
		}
		if _, ok := b["enum"]; ok {
			return true, where
		}
		if _, ok := b["const"]; ok {
			return true, where
		}
		if all, ok := b["allOf"].([]any); ok {
			for _, branch := range all {
				if ok, _ := constrained(root, branch, path, where, depth+1); ok {
					return true, where
				}
			}
		}
		for _, kw := range []string{"anyOf", "oneOf"} {
			if alts, ok := b[kw].([]any); ok && len(alts) > 0 {
				every := true
				for _, branch := range alts {
					if ok, _ := constrained(root, branch, path, where, depth+1); !ok {
						every = false
						break
					}
				}
				if every {
					return true, where
				}
			}
		}
		if len(path) == 0 {
			return leafConstrained(b), where
		}
		seg := path[0]
		if !seg.IsIndex {
			if props, ok := b["properties"].(map[string]any); ok {
				if p, ok := props[seg.Field]; ok {
					return constrained(root, p, path[1:], where+"/properties/"+seg.Field, depth+1)
				}
			}
			if add, ok := b["additionalProperties"].(map[string]any); ok {
				return constrained(root, add, path[1:], where+"/additionalProperties", depth+1)
			}
			return false, where + "/properties/" + seg.Field
		}
		if prefix, ok := b["prefixItems"].([]any); ok && !seg.Dynamic && seg.Index < len(prefix) {
			return constrained(root, prefix[seg.Index], path[1:], fmt.Sprintf("%s/prefixItems/%d", where, seg.Index), depth+1)
		}
		if items, ok := b["items"].(map[string]any); ok {
			return constrained(root, items, path[1:], where+"/items", depth+1)
		}
		return false, where + "/items"
	}
	return false, where
}

func leafConstrained(m map[string]any) bool {
	var types []string
	switch t := m["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				types = append(types, s)
			}
		}
	}
	if len(types) == 0 {
		return false
	}
	for _, t := range types {
		switch t {
		case "boolean", "integer", "number", "null":
		case "string":
			_, hasPattern := m["pattern"]
			_, hasFormat := m["format"]
			if !hasPattern && !hasFormat {
				return false
			}
		default:
			return false
		}
	}
	return true
}
