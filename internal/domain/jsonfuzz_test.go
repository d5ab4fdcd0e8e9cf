package domain

import (
	"encoding/json"
	"testing"
)

// FuzzJSONScalarsAsEncodingJSON: a text (as value and as key), an integer and a boolean come
// out of MarshalJSON and CanonicalJSON exactly as json.Marshal writes them.
func FuzzJSONScalarsAsEncodingJSON(f *testing.F) {
	for _, s := range []string{"", "a<b>&c", "\u2028\u2029", "\xff\xfe", "\x00\x1f\x7f", `"\`, "é"} {
		f.Add(s, int64(-1), true)
	}
	f.Fuzz(func(t *testing.T, s string, n int64, ok bool) {
		v := map[string]any{s: []any{s, n, int(n), ok, nil}}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for name, enc := range map[string]func(any) ([]byte, error){"MarshalJSON": MarshalJSON, "CanonicalJSON": CanonicalJSON} {
			got, err := enc(v)
			if err != nil || string(got) != string(want) {
				t.Fatalf("%s(%q) = %s %v, want %s", name, s, got, err, want)
			}
		}
	})
}
