package domain

import "strings"

// CoerceNumbers makes a decoded JSON value match the number types its schema declares: integers
// where the schema says number become floats. JSON does not tell 635 from 635.0, but CEL does,
// and a rule such as subtotal + tax == total must not fail on it. The engine applies it again
// to every output it reads back from the ledger, so that a resumed, replayed or approved run
// sees the values the gate passed.
func CoerceNumbers(schema, value any) any {
	return coerce(schema, schema, value, 0)
}

func coerce(root, schema, value any, depth int) any {
	s, ok := schema.(map[string]any)
	if !ok || depth > 64 {
		return value
	}
	if ref, ok := s["$ref"].(string); ok && strings.HasPrefix(ref, "#") {
		value = coerce(root, schemaPointer(root, ref[1:]), value, depth+1)
	}
	for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
		if alts, ok := s[kw].([]any); ok {
			for _, a := range alts {
				value = coerce(root, a, value, depth+1)
			}
		}
	}
	switch v := value.(type) {
	case int64:
		if declaresNumberNotInteger(s["type"]) {
			return float64(v)
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		extra, _ := s["additionalProperties"].(map[string]any)
		for k, e := range v {
			if ps, ok := props[k]; ok {
				v[k] = coerce(root, ps, e, depth+1)
			} else if extra != nil {
				v[k] = coerce(root, extra, e, depth+1)
			}
		}
	case []any:
		prefix, _ := s["prefixItems"].([]any)
		for i, e := range v {
			if i < len(prefix) {
				v[i] = coerce(root, prefix[i], e, depth+1)
			} else if items, ok := s["items"]; ok {
				v[i] = coerce(root, items, e, depth+1)
			}
		}
	}
	return value
}

func declaresNumberNotInteger(t any) bool {
	switch x := t.(type) {
	case string:
		return x == "number"
	case []any:
		number, integer := false, false
		for _, e := range x {
			number = number || e == "number"
			integer = integer || e == "integer"
		}
		return number && !integer
	}
	return false
}

func schemaPointer(doc any, ptr string) any {
	if ptr == "" {
		return doc
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		doc = m[tok]
	}
	return doc
}
