package llm

import (
	"testing"
	"unicode/utf8"
)

// FuzzProviderHeaders feeds the readers of what a provider sends back about a call (request id,
// processing time, model name) arbitrary text: what they keep must be printable ASCII within
// its bound, and a processing time must be a non-negative whole number.
func FuzzProviderHeaders(f *testing.F) {
	f.Add("req_abc123", "1234")
	f.Add("req_\x1b[31m\u202e", "640.5")
	f.Add("", "NaN")
	f.Add("x", "-1")
	f.Add("y", "1e400")
	f.Fuzz(func(t *testing.T, id, ms string) {
		got := headerSafe(id, maxRequestID)
		if len(got) > maxRequestID || !utf8.ValidString(got) {
			t.Fatalf("%q -> %q", id, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] > 0x7e {
				t.Fatalf("%q kept byte %#x", id, got[i])
			}
		}
		if p := parseProcessingMS(ms); p != nil && *p < 0 {
			t.Fatalf("%q -> %d", ms, *p)
		}
	})
}
