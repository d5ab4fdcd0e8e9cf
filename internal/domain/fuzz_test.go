package domain

import (
	"bytes"
	"testing"
)

// FuzzCanonicalJSON: whatever decodes must re-encode canonically, and the canonical form must
// be a fixed point (the run key and input hash depend on it).
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"b": 1, "a": [1.5, "x", null, true]}`, `"<&>"`, `1e400`, `{"a": {"a": {"a": 0}}}`, `-0`, `12345678901234567890`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			return
		}
		first, err := CanonicalJSON(v)
		if err != nil {
			return // e.g. numbers JSON cannot hold after normalisation
		}
		again, err := DecodeJSON(first)
		if err != nil {
			t.Fatalf("canonical form %s does not decode: %v", first, err)
		}
		second, err := CanonicalJSON(again)
		if err != nil || !bytes.Equal(first, second) {
			t.Fatalf("canonical form is not a fixed point:\n%s\n%s", first, second)
		}
	})
}
