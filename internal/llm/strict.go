package llm

import (
	"fmt"
	"sort"
	"strings"
)

// Limits of strict structured output (OpenAI's published subset, which compatible servers
// follow or ignore).
const (
	strictMaxDepth      = 10
	strictMaxProperties = 5000
	strictMaxEnumValues = 1000
)

// strictUnsupported are keywords strict mode rejects.
var strictUnsupported = map[string]bool{
	"allOf": true, "not": true, "if": true, "then": true, "else": true, "oneOf": true,
	"dependentRequired": true, "dependentSchemas": true, "patternProperties": true,
	"unevaluatedProperties": true, "unevaluatedItems": true, "propertyNames": true,
	"minProperties": true, "maxProperties": true, "contains": true, "minContains": true,
	"maxContains": true, "uniqueItems": true, "prefixItems": true, "minLength": true,
	"maxLength": true, "contentEncoding": true, "contentMediaType": true,
}

// StrictIssues lists why a schema cannot be sent as strict structured output; empty means it
// can. The gate enforces the schema after the fact either way.
func StrictIssues(schema any) []string {
	c := &strictCheck{}
	root, ok := schema.(map[string]any)
	if !ok {
		return []string{"the schema is not an object"}
	}
	if t, _ := root["type"].(string); t != "object" {
		c.add("/", "the root must be type: object")
	}
	c.walk(root, "", 0)
	if c.props > strictMaxProperties {
		c.add("/", fmt.Sprintf("%d properties in all; the limit is %d", c.props, strictMaxProperties))
	}
	if c.enums > strictMaxEnumValues {
		c.add("/", fmt.Sprintf("%d enum values in all; the limit is %d", c.enums, strictMaxEnumValues))
	}
	sort.Strings(c.issues)
	return c.issues
}

type strictCheck struct {
	issues []string
	props  int
	enums  int
}

func (c *strictCheck) add(path, msg string) {
	if path == "" {
		path = "/"
	}
	c.issues = append(c.issues, path+": "+msg)
}

func (c *strictCheck) walk(s map[string]any, path string, depth int) {
	if depth > strictMaxDepth {
		c.add(path, fmt.Sprintf("nested deeper than %d levels", strictMaxDepth))
		return
	}
	for k := range s {
		if strictUnsupported[k] {
			c.add(path, "keyword "+k+" is not supported")
		}
	}
	if ref, ok := s["$ref"].(string); ok && !strings.HasPrefix(ref, "#") {
		c.add(path, "$ref to another document is not supported")
	}
	if e, ok := s["enum"].([]any); ok {
		c.enums += len(e)
	}
	if props, ok := s["properties"].(map[string]any); ok {
		c.props += len(props)
		required := map[string]bool{}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if name, ok := r.(string); ok {
					required[name] = true
				}
			}
		}
		var optional []string
		for name := range props {
			if !required[name] {
				optional = append(optional, name)
			}
		}
		sort.Strings(optional)
		if len(optional) > 0 {
			c.add(path, "optional properties ("+strings.Join(optional, ", ")+"); strict mode needs every property in required (use a null type for optional values)")
		}
		if ap, ok := s["additionalProperties"].(bool); !ok || ap {
			c.add(path, "needs additionalProperties: false")
		}
		for _, name := range sortedNames(props) {
			if sub, ok := props[name].(map[string]any); ok {
				c.walk(sub, path+"/properties/"+name, depth+1)
			}
		}
	} else if t, _ := s["type"].(string); t == "object" {
		if ap, ok := s["additionalProperties"].(bool); !ok || ap {
			c.add(path, "needs additionalProperties: false")
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		c.walk(items, path+"/items", depth+1)
	}
	for _, kw := range []string{"anyOf"} {
		if alts, ok := s[kw].([]any); ok {
			for i, a := range alts {
				if sub, ok := a.(map[string]any); ok {
					c.walk(sub, fmt.Sprintf("%s/%s/%d", path, kw, i), depth+1)
				}
			}
		}
	}
	for _, kw := range []string{"$defs", "definitions"} {
		if defs, ok := s[kw].(map[string]any); ok {
			for _, name := range sortedNames(defs) {
				if sub, ok := defs[name].(map[string]any); ok {
					c.walk(sub, path+"/"+kw+"/"+name, depth+1)
				}
			}
		}
	}
}

func sortedNames(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
