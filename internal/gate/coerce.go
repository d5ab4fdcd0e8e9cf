package gate

import (
	"fmt"
	"math"

	"github.com/pipectl/pipectl/internal/domain"
)

// Coerce makes a decoded JSON value match the number types its schema declares (see
// domain.CoerceNumbers).
func Coerce(schema, value any) any {
	return domain.CoerceNumbers(schema, value)
}

// nonFinite lists the numbers JSON cannot carry (infinities, NaN: a CEL division by zero, or
// 1e400 read as +Inf) with their JSON pointers; such a value cannot pass a gate, since
// everything after it, from the ledger to the next step, would see something else.
func nonFinite(v any, path string, out []Reason) []Reason {
	switch x := v.(type) {
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			out = append(out, Reason{Path: path, Keyword: "number", Message: fmt.Sprintf("%v is not a finite number; JSON numbers must be finite (a number too large for a 64-bit float reads as infinite)", x)})
		}
	case map[string]any:
		for k, e := range x {
			out = nonFinite(e, path+"/"+escapePointer(k), out)
		}
	case []any:
		for i, e := range x {
			out = nonFinite(e, fmt.Sprintf("%s/%d", path, i), out)
		}
	}
	return out
}

func escapePointer(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~':
			out = append(out, "~0"...)
		case '/':
			out = append(out, "~1"...)
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}
