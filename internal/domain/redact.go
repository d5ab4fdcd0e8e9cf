package domain

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Redacted is what a secret value becomes in the ledger, logs and error messages.
const Redacted = "***"

// minEncodedForm is the shortest encoded form replaced. Encodings of very short values (and the
// alignment-independent middle of a base64 encoding, which can be one or two characters) would
// match ordinary text everywhere.
const minEncodedForm = 6

// Redactor replaces secret values in text bound for the ledger, logs, recordings and the
// terminal. Besides the raw value it replaces the forms a value takes on its way out: JSON
// escaping (once and twice), URL query and path escaping, base64 (standard and URL alphabets,
// with and without padding, and the part of the encoding that does not depend on what
// surrounds the value, so that a secret inside a larger encoded text such as
// base64("user:"+secret) is found too) and hex in both cases.
//
// Values can be added while it is in use (a header computed from a secret is a secret of its
// own for the rest of the run); it is safe for concurrent use. A nil *Redactor redacts nothing.
//
// Redaction must run on a whole text before any cut: a cut secret is no longer recognised.
type Redactor struct {
	mu      sync.Mutex
	values  map[string]bool
	forms   map[string]bool
	derived int
	rep     atomic.Pointer[strings.Replacer]
}

// maxDerived bounds how many computed values a redactor learns: each one rebuilds its
// replacer, and a for_each over many items could otherwise make every attempt pay for all the
// earlier ones. Past it, computed values are still recorded as *** where they are used.
const maxDerived = 256

// NewRedactor builds a redactor for the given secret values; empty values are ignored.
func NewRedactor(values []string) *Redactor {
	r := &Redactor{}
	r.Add(values...)
	return r
}

// Add makes the redactor replace more values; empty and known values are ignored.
func (r *Redactor) Add(values ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.values == nil {
		r.values, r.forms = map[string]bool{}, map[string]bool{}
	}
	changed := false
	for _, v := range values {
		if v == "" || r.values[v] {
			continue
		}
		r.values[v] = true
		for _, f := range formsOf(v) {
			if !r.forms[f] {
				r.forms[f] = true
				changed = true
			}
		}
	}
	if !changed {
		return
	}
	forms := make([]string, 0, len(r.forms))
	for f := range r.forms {
		forms = append(forms, f)
	}
	// Longest first, so that a value containing another is replaced whole.
	sort.Slice(forms, func(i, j int) bool {
		if len(forms[i]) != len(forms[j]) {
			return len(forms[i]) > len(forms[j])
		}
		return forms[i] < forms[j]
	})
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	r.rep.Store(strings.NewReplacer(pairs...))
}

// AddDerived learns a value computed from a secret (base64 of "user:"+secret, an upper-cased
// or cut secret), unless what is already known redacts it, such as "Bearer "+secret. It reports
// whether the value is redacted from now on.
func (r *Redactor) AddDerived(v string) bool {
	if r == nil || v == "" {
		return false
	}
	if r.Contains(v) {
		return true
	}
	r.mu.Lock()
	full := r.derived >= maxDerived
	if !full {
		r.derived++
	}
	r.mu.Unlock()
	if full {
		return false
	}
	r.Add(v)
	return true
}

// formsOf lists the texts that give a value away.
func formsOf(v string) []string {
	out := []string{v}
	// Escaped forms are never shorter than the value; encodings can be, and must be long enough.
	once := jsonInner(v, true)
	out = append(out, once, jsonInner(v, false), jsonInner(once, true), url.QueryEscape(v), url.PathEscape(v), url.QueryEscape(url.QueryEscape(v)))
	add := func(f string) {
		if len(f) >= minEncodedForm {
			out = append(out, f)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		full := enc.EncodeToString([]byte(v))
		add(full)
		add(url.QueryEscape(full))
		add(url.PathEscape(full))
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for _, m := range base64Middles(enc, v) {
			add(m)
			add(url.QueryEscape(m))
		}
	}
	h := hex.EncodeToString([]byte(v))
	add(h)
	add(strings.ToUpper(h))
	return out
}

// base64Middles returns, for each of the three byte alignments a value can have inside a longer
// text, the characters of its encoding that depend on the value's bytes alone.
func base64Middles(enc *base64.Encoding, v string) []string {
	var out []string
	n := len(v)
	for k := 0; k < 3; k++ {
		padded := make([]byte, k+n)
		copy(padded[k:], v)
		s := enc.EncodeToString(padded)
		start := (8*k + 5) / 6 // first character whose six bits all come from the value
		end := (8 * (k + n)) / 6
		if end > len(s) {
			end = len(s)
		}
		if end > start {
			out = append(out, s[start:end])
		}
	}
	return out
}

func jsonInner(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(s); err != nil {
		return s
	}
	q := strings.TrimSuffix(b.String(), "\n")
	return q[1 : len(q)-1]
}

func (r *Redactor) replacer() *strings.Replacer {
	if r == nil {
		return nil
	}
	return r.rep.Load()
}

// String redacts s.
func (r *Redactor) String(s string) string {
	rep := r.replacer()
	if rep == nil || s == "" {
		return s
	}
	return replaceAll(rep, s)
}

// maxPasses bounds replaceAll's passes over a text in which a secret was found.
const maxPasses = 8

// replaceAll applies rep again as long as a pass replaced something: a mask written next to
// ordinary text can form a secret again (with the secret "*0", "0" + "*0" + "0" becomes
// "0***0", which holds "*0"). A pass that replaces a secret removes at least one of its
// characters that are not the mask's, or shortens a run of the mask's own, so the passes come
// to an end; the bound is for secrets the mask itself contains, which no masking can keep out.
// A text with no secret in it is scanned once, as before.
func replaceAll(rep *strings.Replacer, s string) string {
	out := rep.Replace(s)
	for range maxPasses {
		if out == s {
			break
		}
		s, out = out, rep.Replace(out)
	}
	return out
}

// Bytes redacts a byte slice of text.
func (r *Redactor) Bytes(b []byte) []byte {
	rep := r.replacer()
	if rep == nil || len(b) == 0 {
		return b
	}
	return []byte(replaceAll(rep, string(b)))
}

// JSON redacts a JSON document and keeps it a valid one: when replacing text would break the
// document (a secret that looks like a number, or that spans its syntax), the values inside it
// are redacted one by one instead.
func (r *Redactor) JSON(b []byte) []byte {
	out := r.Bytes(b)
	if bytes.Equal(out, b) || json.Valid(out) || !json.Valid(b) {
		return out
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return out
	}
	enc, err := json.Marshal(r.Value(v))
	if err != nil {
		return out
	}
	return enc
}

// Value redacts every string, key and number inside a decoded JSON value; a number that gives a
// secret away becomes the string "***". It returns a new value.
func (r *Redactor) Value(v any) any {
	switch x := v.(type) {
	case string:
		return r.String(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[r.String(k)] = r.Value(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = r.Value(e)
		}
		return out
	case json.Number:
		if r.Contains(x.String()) {
			return Redacted
		}
	case int64:
		if r.Contains(strconv.FormatInt(x, 10)) {
			return Redacted
		}
	case float64:
		if r.Contains(strconv.FormatFloat(x, 'g', -1, 64)) {
			return Redacted
		}
	}
	return v
}

// Contains reports whether s gives a secret away.
func (r *Redactor) Contains(s string) bool {
	return r.String(s) != s
}

// Head redacts s, then keeps at most n bytes of it (on a character boundary), marking the cut.
func (r *Redactor) Head(s string, n int) string {
	s = r.String(s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// Tail redacts s, then keeps at most its last n bytes (on a character boundary), marking the cut.
func (r *Redactor) Tail(s string, n int) string {
	s = r.String(s)
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return "..." + s[i:]
}

// MentionsSecrets reports whether a template's ${{ }} expressions name the secrets variable,
// so that what it renders counts as a secret whatever it looks like (an upper-cased, cut or
// encoded secret is still one). It errs on the side of yes: the word anywhere after a "${{".
func MentionsSecrets(tpl string) bool {
	i := strings.Index(tpl, "${{")
	if i < 0 {
		return false
	}
	s := tpl[i:]
	for {
		j := strings.Index(s, "secrets")
		if j < 0 {
			return false
		}
		before, after := byte(' '), byte(' ')
		if j > 0 {
			before = s[j-1]
		}
		if j+7 < len(s) {
			after = s[j+7]
		}
		if !isIdentByte(before) && before != '.' && !isIdentByte(after) {
			return true
		}
		s = s[j+7:]
	}
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
