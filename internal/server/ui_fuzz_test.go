package server

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever ?next= a link carries, sign-in sends the browser to a path on this
// site: a browser resolving the Location against this origin stays on it.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/inbox", "//evil.example", "/\\evil.example", "https://evil.example", "javascript:alert(1)", "", "/runs/x?y=1", "/%2F%2Fevil", "\t//evil", "/\t/evil"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://dash.example:8443/signin")
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		// Browsers drop tabs and newlines from URLs and read "\\" as "/": read it as they do.
		cleaned := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(got)
		u, err := url.Parse(cleaned)
		if err != nil {
			t.Fatalf("%q became %q, which does not parse", next, got)
		}
		if r := base.ResolveReference(u); r.Host != base.Host || r.Scheme != base.Scheme {
			t.Fatalf("next %q leads to %s", next, r)
		}
	})
}
