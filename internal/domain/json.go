package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// DecodeJSON decodes a JSON document into the values expressions expect: integers as int64,
// other numbers as float64. A number beyond the range of a float64 (1e400) is an error: it would
// become an infinity, which no JSON can carry back out.
func DecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("unexpected data after the JSON value")
	}
	return normalizeNumbers(v, "")
}

func normalizeNumbers(v any, path string) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("number %s at %q is out of the range of a 64-bit float", shortNumber(x.String()), path)
		}
		if f == 0 {
			// -0.0 passes "integer, minimum 0" yet its text starts with "-": an option in an
			// argv. No pipeline means the sign of zero.
			return float64(0), nil
		}
		return f, nil
	case map[string]any:
		for k, val := range x {
			n, err := normalizeNumbers(val, path+"/"+k)
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	case []any:
		for i, val := range x {
			n, err := normalizeNumbers(val, path+"/"+strconv.Itoa(i))
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	}
	return v, nil
}

func shortNumber(s string) string {
	if len(s) > 40 {
		return s[:20] + "..." + s[len(s)-10:]
	}
	return s
}

// MarshalJSON encodes v for the ledger so that it decodes back to the same Go types: a float64
// holding a whole number is written 635.0, not 635, which DecodeJSON would read as an int64
// (and CEL tells 635 from 635.0). Infinities and NaN are errors. Map keys come out sorted.
func MarshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeTyped(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeTyped(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			if err := writeTyped(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeTyped(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Errorf("%v is not a finite number and cannot be stored as JSON", x)
		}
		enc, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(enc)
		if !bytes.ContainsAny(enc, ".eE") {
			b.WriteString(".0")
		}
	default:
		if writeScalar(b, v) {
			return nil
		}
		enc, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(enc)
	}
	return nil
}

// CanonicalJSON encodes v with sorted keys and no insignificant space, so that equal values
// hash equally.
func CanonicalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeCanonical(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeCanonical(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			if err := writeCanonical(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	default:
		if writeScalar(b, v) {
			return nil
		}
		enc, err := json.Marshal(x)
		if err != nil {
			return err
		}
		b.Write(enc)
	}
	return nil
}

// writeScalar writes the values every output is made of (texts, whole numbers, booleans, null)
// exactly as json.Marshal would, without its allocations, and reports whether v was one.
func writeScalar(b *bytes.Buffer, v any) bool {
	switch x := v.(type) {
	case string:
		writeString(b, x)
	case int64:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), x, 10))
	case int:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), int64(x), 10))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case nil:
		b.WriteString("null")
	default:
		return false
	}
	return true
}

// writeString writes s as json.Marshal does: as it is between quotes when it holds only
// printable ASCII that json.Marshal leaves alone (it escapes ", \, <, > and &), through
// json.Marshal otherwise.
func writeString(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s)
			b.Write(enc)
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}
