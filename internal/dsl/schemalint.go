package dsl

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pipectl/pipectl/internal/gate"
)

// jsonTypes are the type names JSON Schema knows.
var jsonTypes = []string{"array", "boolean", "integer", "null", "number", "object", "string"}

// Keywords of JSON Schema 2020-12 and draft-07 (and draft-04's id), by what their value holds. A key of a schema
// object that is none of them is allowed (an annotation), but one a typo away from a keyword
// is almost always that keyword misspelt, and silently ignored it would loosen a gate.
var (
	schemaValued = map[string]bool{"items": true, "additionalItems": true, "contains": true, "not": true, "if": true,
		"then": true, "else": true, "additionalProperties": true, "propertyNames": true, "unevaluatedItems": true,
		"unevaluatedProperties": true, "contentSchema": true}
	schemaMapValued = map[string]bool{"properties": true, "patternProperties": true, "$defs": true,
		"definitions": true, "dependentSchemas": true}
	schemaListValued = map[string]bool{"allOf": true, "anyOf": true, "oneOf": true, "prefixItems": true}
	otherKeywords    = []string{"$schema", "$id", "id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary",
		"$comment", "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
		"exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
		"maxContains", "minContains", "maxProperties", "minProperties", "required", "dependentRequired",
		"dependencies", "format", "contentEncoding", "contentMediaType", "title", "description", "default",
		"deprecated", "readOnly", "writeOnly", "examples"}
	schemaKeywords = func() []string {
		all := append([]string{}, otherKeywords...)
		for _, m := range []map[string]bool{schemaValued, schemaMapValued, schemaListValued} {
			for k := range m {
				all = append(all, k)
			}
		}
		sort.Strings(all)
		return all
	}()
)

// lintInlineSchema reports keys of an inline schema that look like misspelt keywords, at the
// key's own line and column.
func (d *document) lintInlineSchema(ptr string, v any) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		child := pointerJoin(ptr, k)
		switch {
		case schemaValued[k]:
			d.lintInlineSchema(child, obj[k])
		case schemaMapValued[k]:
			if m, ok := obj[k].(map[string]any); ok {
				for name, sub := range m {
					d.lintInlineSchema(pointerJoin(child, name), sub)
				}
			}
		case schemaListValued[k]:
			if l, ok := obj[k].([]any); ok {
				for i, sub := range l {
					d.lintInlineSchema(pointerJoin(child, i), sub)
				}
			}
		case slices.Contains(otherKeywords, k):
		default:
			if best := closest(k, schemaKeywords); best != "" {
				d.keyErrorf(child, "unknown JSON Schema keyword %q; did you mean %q?", k, best)
			}
		}
	}
}

// schemaErrors reports why an inline schema (at ptr) does not compile: each problem at the
// offending keyword's value, with a suggestion for a misspelt type name.
func (d *document) schemaErrors(ptr, location string, err error) {
	problems := schemaProblems(valueAt(d.root, ptr), err)
	if problems == nil {
		d.errorf(ptr, "%s", strings.ReplaceAll(err.Error(), location, "schema"))
		return
	}
	for _, p := range problems {
		d.errorf(ptr+p.path, "invalid JSON Schema: %s", p.msg)
	}
}

// schemaFileError explains why a schema file does not compile, naming each problem's place in
// the file as a JSON pointer; "" when the error says nothing more precise than itself.
func schemaFileError(doc any, err error) string {
	problems := schemaProblems(doc, err)
	if problems == nil {
		return ""
	}
	parts := make([]string, len(problems))
	for i, p := range problems {
		at := p.path
		if at == "" {
			at = "/"
		}
		parts[i] = "at " + at + ": " + p.msg
	}
	return "invalid JSON Schema " + strings.Join(parts, "; ")
}

type schemaProblem struct {
	path string // JSON pointer into the schema document
	msg  string
}

// schemaProblems turns a compile error's meta-schema violations into one message per place in
// the schema; nil when the error carries none.
func schemaProblems(schema any, err error) []schemaProblem {
	var se *gate.SchemaError
	if !errors.As(err, &se) || len(se.Reasons) == 0 {
		return nil
	}
	var order []string
	byPath := map[string][]gate.Reason{}
	for _, r := range se.Reasons {
		if _, seen := byPath[r.Path]; !seen {
			order = append(order, r.Path)
		}
		byPath[r.Path] = append(byPath[r.Path], r)
	}
	var out []schemaProblem
	for _, p := range order {
		if hasDeeper(order, p) {
			// The meta-schema offers alternatives (a type name or a list of them): the deeper
			// finding names the entry that is wrong, the one here only repeats the choice.
			continue
		}
		val := valueAt(schema, p)
		if name, isString := val.(string); isString && strings.HasSuffix(p, "/required") {
			out = append(out, schemaProblem{p, fmt.Sprintf("required must be a list of property names, such as [%s]", name)})
			continue
		}
		var msgs []string
		for _, r := range byPath[p] {
			if name, isString := val.(string); isString && r.Keyword == "enum" && isTypeKeyword(p) {
				// Both complaints about one misspelt name say less than this one does.
				msgs = []string{unknownTypeMessage(name)}
				break
			}
			msgs = append(msgs, r.Message)
		}
		if s, isString := val.(string); isString && len(msgs) > 0 {
			msgs[len(msgs)-1] += yaml11Hint(s)
		}
		out = append(out, schemaProblem{p, strings.Join(msgs, "; ")})
	}
	return out
}

func hasDeeper(paths []string, p string) bool {
	for _, q := range paths {
		if strings.HasPrefix(q, p+"/") {
			return true
		}
	}
	return false
}

// isTypeKeyword reports whether a pointer into a schema ends at its type keyword or at an
// entry of a type list.
func isTypeKeyword(p string) bool {
	segs := strings.Split(p, "/")
	n := len(segs)
	if n >= 2 && segs[n-1] == "type" {
		return true
	}
	if n >= 3 && segs[n-2] == "type" {
		_, err := fmt.Sscan(segs[n-1], new(int))
		return err == nil
	}
	return false
}

func unknownTypeMessage(name string) string {
	msg := fmt.Sprintf("unknown type %q", name)
	if best := closest(strings.ToLower(name), jsonTypes); best != "" {
		return msg + fmt.Sprintf("; did you mean %q?", best)
	}
	return msg + "; use one of " + strings.Join(jsonTypes, ", ")
}
