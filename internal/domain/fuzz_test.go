package domain

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
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

// FuzzMarshalJSONKeepsTypes: whatever decodes must come back from the ledger's encoding with
// the same Go types and values (a whole float stays a float64, an integer an int64).
func FuzzMarshalJSONKeepsTypes(f *testing.F) {
	for _, s := range []string{`{"a": 635, "b": 635.0, "c": [1e21, -0.0, 0.5]}`, `1e400`, `[1.0]`, `{"x": {"y": 12345678901234567890}}`, `-0`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			return
		}
		enc, err := MarshalJSON(v)
		if err != nil {
			t.Fatalf("a decoded value does not encode: %v", err)
		}
		back, err := DecodeJSON(enc)
		if err != nil {
			t.Fatalf("%s does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(v, back) {
			t.Fatalf("%s: %#v came back as %#v", enc, v, back)
		}
	})
}

// FuzzRedactor: a secret placed anywhere in a text is gone after redaction, and a valid JSON
// document stays valid whatever the secret looks like.
func FuzzRedactor(f *testing.F) {
	f.Add("s3cr3t-value", "prefix ", " suffix", []byte(`{"a":"s3cr3t-value","n":12345}`))
	f.Add("12345", "", "", []byte(`[12345, "x12345"]`))
	f.Add(`","`, "a", "b", []byte(`{"a":"","b":""}`))
	f.Fuzz(func(t *testing.T, secret, before, after string, doc []byte) {
		if secret == "" {
			return
		}
		r := NewRedactor([]string{secret})
		if got := r.String(before + secret + after); strings.Contains(got, secret) && !strings.Contains(before+after, secret) && !strings.Contains(Redacted, secret) {
			t.Fatalf("String(%q) = %q keeps the secret", before+secret+after, got)
		}
		if json.Valid(doc) && !json.Valid(r.JSON(doc)) {
			t.Fatalf("JSON(%s) = %s is not JSON", doc, r.JSON(doc))
		}
	})
}
