package domain

import (
	"encoding/json"
	"net/url"
	"sort"
	"strings"
)

// Redacted is what a secret value becomes in the ledger, logs and error messages.
const Redacted = "***"

// Redactor replaces secret values in text bound for the ledger or logs. Besides the raw value
// it replaces the forms a value takes on its way out: JSON-escaped and URL-encoded.
type Redactor struct {
	replacer *strings.Replacer
}

// NewRedactor builds a redactor for the given secret values; empty values are ignored.
func NewRedactor(values []string) *Redactor {
	seen := map[string]bool{}
	var forms []string
	for _, v := range values {
		if v == "" {
			continue
		}
		quoted, _ := json.Marshal(v)
		for _, f := range []string{v, string(quoted[1 : len(quoted)-1]), url.QueryEscape(v), url.PathEscape(v)} {
			if !seen[f] {
				seen[f] = true
				forms = append(forms, f)
			}
		}
	}
	// Longest first, so that a value containing another is replaced whole.
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	var pairs []string
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	return &Redactor{replacer: strings.NewReplacer(pairs...)}
}

// String redacts s. A nil Redactor returns s unchanged.
func (r *Redactor) String(s string) string {
	if r == nil || r.replacer == nil {
		return s
	}
	return r.replacer.Replace(s)
}

// Bytes redacts a byte slice, typically JSON.
func (r *Redactor) Bytes(b []byte) []byte {
	if r == nil || r.replacer == nil || len(b) == 0 {
		return b
	}
	return []byte(r.replacer.Replace(string(b)))
}
