package domain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SinkClass names a position where text becomes part of a side effect, and so decides which
// characters an untrusted value must not carry there.
type SinkClass string

// The sink classes. Each is described by Describe and checked by CheckText.
const (
	// SinkCode is an interpreter's code (sh -c, python -c, node -e, ...) or the stdin it reads
	// its program from: no data at all may be placed there.
	SinkCode SinkClass = "code"
	// SinkFixed is a url's scheme and host, or the program an exec step runs: only the spec's
	// own text, or a value from a finite set the spec lists (enum, const, boolean).
	SinkFixed SinkClass = "fixed"
	// SinkArg is an exec argument that starts with the value: no NUL, no leading '-'.
	SinkArg SinkClass = "argv"
	// SinkArgTail is the part of an exec argument after spec text: no NUL.
	SinkArgTail SinkClass = "argv-tail"
	// SinkURLPath is a url's path: no / ? # % \, no control characters or spaces, not . or ..
	SinkURLPath SinkClass = "url-path"
	// SinkURLQuery is inside a url's query string or fragment: SinkURLPath plus & = + ;
	SinkURLQuery SinkClass = "url-query"
	// SinkQueryValue is a value of an http step's query map (encoded by the step).
	SinkQueryValue SinkClass = "query-value"
	// SinkHeader is an http header value: no CR, LF or other control characters but tab.
	SinkHeader SinkClass = "header"
	// SinkEnv is an exec env value: no NUL.
	SinkEnv SinkClass = "env"
	// SinkPath is a file system path segment (exec workdir): as SinkURLPath.
	SinkPath SinkClass = "path"
	// SinkBodyText is inside an http body written as text around placeholders ('{"user":
	// "${{ x }}"}', "user=${{ x }}&role=viewer"): the body's format is the spec's, unknown
	// here, so no quote, backslash, form or markup delimiter, or control character.
	SinkBodyText SinkClass = "body-text"
)

// Forbidden says in words what the class refuses, for error messages.
func (c SinkClass) Forbidden() string {
	switch c {
	case SinkCode:
		return "any data"
	case SinkFixed:
		return "anything but the spec's own text or a value it lists"
	case SinkArg:
		return `NUL and a leading "-"`
	case SinkArgTail, SinkEnv:
		return "NUL"
	case SinkURLPath, SinkPath:
		return `/ ? # % \, spaces and control characters, and "", "." or ".." as a whole segment`
	case SinkQueryValue:
		return `/ ? # % \, spaces and control characters, and "." or ".." as a whole segment`
	case SinkURLQuery:
		return `/ ? # % \ & = + ;, spaces and control characters, and "." or ".."`
	case SinkHeader:
		return "CR, LF and other control characters"
	case SinkBodyText:
		return `quotes, \ & = + % ; < >, and control characters`
	}
	return "unknown characters"
}

// AllowsRune reports whether r may appear anywhere in an untrusted value in this position.
func (c SinkClass) AllowsRune(r rune) bool {
	switch c {
	case SinkCode, SinkFixed:
		return false
	case SinkArg, SinkArgTail, SinkEnv:
		return r != 0
	case SinkHeader:
		return r == '\t' || !(r < 0x20 || r == 0x7f)
	case SinkBodyText:
		if r < 0x20 || r == 0x7f || unicode.IsControl(r) || r == 0x2028 || r == 0x2029 {
			return false
		}
		return !strings.ContainsRune(`"'\&=+%;<>`, r)
	case SinkURLPath, SinkQueryValue, SinkPath, SinkURLQuery:
		if r <= ' ' || r == 0x7f || unicode.IsControl(r) || unicode.Is(unicode.Zs, r) || r == 0x2028 || r == 0x2029 {
			return false
		}
		switch r {
		case '/', '?', '#', '%', '\\':
			return false
		case '&', '=', '+', ';':
			return c != SinkURLQuery
		}
		return true
	}
	return false
}

// AllowsLeading reports whether r may start an untrusted value in this position.
func (c SinkClass) AllowsLeading(r rune) bool {
	if c == SinkArg && r == '-' {
		return false
	}
	return c.AllowsRune(r)
}

// ForbidsDots reports whether "." and ".." are dangerous as the whole value.
func (c SinkClass) ForbidsDots() bool {
	switch c {
	case SinkURLPath, SinkURLQuery, SinkQueryValue, SinkPath:
		return true
	}
	return false
}

// ForbidsEmpty reports whether the empty text is dangerous as the whole value: in a path it
// drops the segment, so that .../users/${{ id }} names the collection (.../users/) instead
// of one item, and a workdir /srv/${{ tenant }} becomes /srv/.
func (c SinkClass) ForbidsEmpty() bool {
	return c == SinkURLPath || c == SinkPath
}

// CheckText is the run-time check of an untrusted value's text in this position.
func (c SinkClass) CheckText(s string) error {
	if c == SinkCode || c == SinkFixed {
		return fmt.Errorf("takes %s", c.Forbidden())
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for i, r := range s {
		if i == 0 && !c.AllowsLeading(r) || !c.AllowsRune(r) {
			return fmt.Errorf("holds %s at byte %d (this position refuses %s)", strconv.QuoteRune(r), i, c.Forbidden())
		}
	}
	if c.ForbidsDots() && (s == "." || s == "..") {
		return fmt.Errorf("is %q (this position refuses %s)", s, c.Forbidden())
	}
	if c.ForbidsEmpty() && s == "" {
		return fmt.Errorf("is empty (this position refuses %s)", c.Forbidden())
	}
	return nil
}

// CheckValue is the run-time check of an untrusted value as a sink receives it. A number's text
// (digits, a sign, a point, an exponent such as 1e+21) changes the structure of nothing, so it
// is refused only where any choice is (scheme, host, program, code) or where a minus would
// start an argument; everything else is checked as text.
func (c SinkClass) CheckValue(v any) error {
	if _, ok := number(v); ok && c != SinkCode && c != SinkFixed {
		if text := SinkText(v); c == SinkArg && strings.HasPrefix(text, "-") {
			return fmt.Errorf("is negative, so its text %q starts with \"-\" (this position refuses %s)", text, c.Forbidden())
		}
		return nil
	}
	return c.CheckText(SinkText(v))
}

// ConstraintKind says what in a schema keeps an untrusted value safe for a sink.
type ConstraintKind string

// Constraint kinds. ConstraintNone marks a flow the static check did not prove safe (a test
// hook can weaken it): the run-time check then looks at the text itself.
const (
	ConstraintNone    ConstraintKind = ""
	ConstraintEnum    ConstraintKind = "enum"
	ConstraintBoolean ConstraintKind = "boolean"
	ConstraintNumber  ConstraintKind = "number"
	ConstraintInteger ConstraintKind = "integer"
	ConstraintPattern ConstraintKind = "pattern"
	ConstraintFormat  ConstraintKind = "format"
	ConstraintAnyOf   ConstraintKind = "anyOf"
)

// Constraint is what the compiled schema of this run's spec says about a value, reduced to
// plain data so that the engine can check a value again right before a side effect.
type Constraint struct {
	Kind ConstraintKind `json:"kind,omitempty"`
	// Values are the admitted values of an enum or const (also for a boolean: true, false).
	Values []any `json:"values,omitempty"`
	// Pattern is the schema's regular expression, anchored at both ends.
	Pattern string `json:"pattern,omitempty"`
	Format  string `json:"format,omitempty"`
	// NonNegative is set when the schema keeps a number at zero or above.
	NonNegative bool `json:"non_negative,omitempty"`
	// AllowNull admits null beside the kind.
	AllowNull bool `json:"allow_null,omitempty"`
	// Any holds the branches of an anyOf/oneOf, each of which keeps the value safe.
	Any []Constraint `json:"any,omitempty"`
}

// Finite reports whether the constraint admits only values the spec itself lists.
func (c Constraint) Finite() bool {
	switch c.Kind {
	case ConstraintEnum, ConstraintBoolean:
		return true
	case ConstraintAnyOf:
		for _, b := range c.Any {
			if !b.Finite() {
				return false
			}
		}
		return len(c.Any) > 0
	}
	return false
}

// Lists reports whether v is one of the values the spec itself lists: an enum or const
// value, a boolean, or such a value of an anyOf branch. Such a value is the spec's own text and
// needs no check of its characters (anyOf [enum ["-v"], pattern] admits "-v" by its enum).
func (c Constraint) Lists(v any) bool {
	switch c.Kind {
	case ConstraintEnum, ConstraintBoolean:
		return c.Admits(v) == nil
	case ConstraintAnyOf:
		for _, b := range c.Any {
			if b.Lists(v) {
				return true
			}
		}
	}
	return false
}

// Admits is the run-time check of a source value against the constraint: the value must be
// one the schema of this run's spec lets through.
func (c Constraint) Admits(v any) error {
	if v == nil && c.AllowNull {
		return nil
	}
	switch c.Kind {
	case ConstraintNone:
		return nil
	case ConstraintEnum, ConstraintBoolean:
		for _, a := range c.Values {
			if jsonEqual(a, v) {
				return nil
			}
		}
		return fmt.Errorf("is not one of the %d values the schema lists", len(c.Values))
	case ConstraintInteger, ConstraintNumber:
		f, ok := number(v)
		if !ok {
			return fmt.Errorf("is %s, not a number", typeName(v))
		}
		if c.Kind == ConstraintInteger && f != math.Trunc(f) {
			return fmt.Errorf("is not an integer")
		}
		if c.NonNegative && (f < 0 || math.Signbit(f)) {
			return fmt.Errorf("is negative")
		}
		return nil
	case ConstraintPattern:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("is %s, not a string", typeName(v))
		}
		// Compiled per check: a pipeline is shared by concurrent units, and a pattern costs
		// microseconds next to the side effect it guards.
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			return fmt.Errorf("pattern %q does not compile: %v", c.Pattern, err)
		}
		if !re.MatchString(s) {
			return fmt.Errorf("does not match %s", c.Pattern)
		}
		return nil
	case ConstraintFormat:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("is %s, not a string", typeName(v))
		}
		if !SafeFormatValid(c.Format, s) {
			return fmt.Errorf("is not a valid %s", c.Format)
		}
		return nil
	case ConstraintAnyOf:
		for _, b := range c.Any {
			if b.Admits(v) == nil {
				return nil
			}
		}
		return fmt.Errorf("matches none of the schema's alternatives")
	}
	return fmt.Errorf("unknown constraint %q", c.Kind)
}

// SafeFormats are the JSON Schema formats whose every valid value is made of characters safe
// in an argv, url path or query, header or env position (never in a url's host).
var SafeFormats = []string{"uuid", "date", "date-time", "ipv4", "ipv6"}

// formatRunes lists every character a valid value of each safe format may hold, and
// formatLeading those it may start with (FuzzSafeFormats keeps both true).
var formatRunes = map[string]string{
	"uuid":      "0123456789abcdefABCDEF-",
	"date":      "0123456789-",
	"date-time": "0123456789-:.+TtZz",
	"ipv4":      "0123456789.",
	"ipv6":      "0123456789abcdefABCDEF:.",
}

var formatLeading = map[string]string{
	"uuid":      "0123456789abcdefABCDEF",
	"date":      "0123456789",
	"date-time": "0123456789",
	"ipv4":      "0123456789",
	"ipv6":      "0123456789abcdefABCDEF:",
}

// FormatRunes is every character a valid value of a safe format may hold ("" for another format).
func FormatRunes(format string) string { return formatRunes[format] }

// FormatUnsafeRune finds a character that a valid value of a safe format may hold and that
// this position refuses (date-time's "+" in a url's query string, where it means a space).
func FormatUnsafeRune(format string, c SinkClass) (rune, bool) {
	all, lead := formatRunes[format], formatLeading[format]
	if all == "" {
		return 0, true
	}
	for _, r := range all {
		if !c.AllowsRune(r) {
			return r, true
		}
	}
	for _, r := range lead {
		if !c.AllowsLeading(r) {
			return r, true
		}
	}
	return 0, false
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// SafeFormatValid checks a value against one of SafeFormats with the standard library, the
// same way at run time whatever the schema library does.
func SafeFormatValid(format, s string) bool {
	switch format {
	case "uuid":
		return uuidRE.MatchString(s)
	case "date":
		_, err := time.Parse("2006-01-02", s)
		return err == nil
	case "date-time":
		return dateTimeValid(s)
	case "ipv4":
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is4()
	case "ipv6":
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	return false
}

// dateTimeValid is RFC 3339's date-time: the standard library's reading, plus the leap second
// (23:59:60 in UTC) that it refuses and RFC 3339 allows.
func dateTimeValid(s string) bool {
	if strings.ContainsAny(s, " /\\?#%") {
		return false
	}
	s = strings.Replace(strings.Replace(s, "t", "T", 1), "z", "Z", 1)
	leap := len(s) >= 19 && s[10] == 'T' && s[16:19] == ":60"
	if leap {
		s = s[:17] + "59" + s[19:]
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return false
	}
	if leap {
		u := t.UTC()
		return u.Hour() == 23 && u.Minute() == 59
	}
	return true
}

// SinkText is the text a rendered value takes in an argv, url, header or env position: strings
// as they are, other values as JSON (the same rule the http and exec steps apply).
func SinkText(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	}
	// As the http and exec steps send it: no HTML escaping, so that the check sees the very
	// characters that go out (json.Marshal would hide an & as \u0026).
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, !math.IsInf(n, 0) && !math.IsNaN(n)
	}
	return 0, false
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}

func jsonEqual(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
		return ok && fa == fb
	}
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// PathSegment is one step into a JSON value: a field, a constant index, or every element.
type PathSegment struct {
	Field string `json:"field,omitempty"`
	Index int    `json:"index,omitempty"`
	// IsIndex is set for list positions; Every with it means every element (or every field).
	IsIndex bool `json:"is_index,omitempty"`
	Every   bool `json:"every,omitempty"`
}

// ValueRef names an untrusted value where the engine can read it: inputs, or a step's output.
type ValueRef struct {
	// Step is empty for the run's inputs.
	Step string        `json:"step,omitempty"`
	Path []PathSegment `json:"path,omitempty"`
}

func (r ValueRef) String() string {
	var b strings.Builder
	if r.Step == "" {
		b.WriteString("inputs")
	} else {
		b.WriteString("steps." + r.Step + ".output")
	}
	for _, s := range r.Path {
		switch {
		case s.Every:
			b.WriteString("[*]")
		case s.IsIndex:
			fmt.Fprintf(&b, "[%d]", s.Index)
		default:
			b.WriteString("." + s.Field)
		}
	}
	return b.String()
}

// Lookup returns every value the reference names in a unit's expression variables (several
// when the path says every element). A value that does not exist is not returned.
func (r ValueRef) Lookup(vars map[string]any) []any {
	var root any
	if r.Step == "" {
		root = vars["inputs"]
	} else {
		steps, _ := vars["steps"].(map[string]any)
		st, _ := steps[r.Step].(map[string]any)
		if st == nil {
			return nil
		}
		root = st["output"]
	}
	cur := []any{root}
	for _, seg := range r.Path {
		var next []any
		for _, v := range cur {
			switch x := v.(type) {
			case map[string]any:
				if seg.Every {
					for _, e := range x {
						next = append(next, e)
					}
				} else if e, ok := x[seg.Field]; ok && !seg.IsIndex {
					next = append(next, e)
				}
			case []any:
				if seg.Every {
					next = append(next, x...)
				} else if seg.IsIndex && seg.Index >= 0 && seg.Index < len(x) {
					next = append(next, x[seg.Index])
				}
			}
		}
		cur = next
	}
	return cur
}

// SinkFlow is one untrusted value that reaches a sink placeholder.
type SinkFlow struct {
	// Origin is where the value was last checked by a schema, or where it entered unchecked.
	Origin ValueRef `json:"origin"`
	// Source says what kind of source it is, for messages: "run input", "model-proposed value".
	Source string `json:"source"`
	// Transformed is set when the placeholder computes from the value instead of passing it.
	Transformed bool       `json:"transformed,omitempty"`
	Constraint  Constraint `json:"constraint"`
	// Class, when set, is a stricter position than the placeholder's: the spec's own text on
	// the value's way (a transform's "?user=${{ x }}") places it in a url's query string.
	Class SinkClass `json:"class,omitempty"`
}

// SinkCheck is one placeholder in a sink position of a step, with everything untrusted that
// flows into it. The engine re-checks it before the step runs.
type SinkCheck struct {
	// Field is the position in the spec, such as command[2] or headers.X-Team.
	Field string `json:"field"`
	// Expr is the placeholder's CEL source.
	Expr  string     `json:"expr"`
	Class SinkClass  `json:"class"`
	Flows []SinkFlow `json:"flows"`
	// Before is the url template up to the placeholder, when it stands in a url: the run-time
	// check places the value by the rendered text before it.
	Before []TemplatePiece `json:"before,omitempty"`
}

// TemplatePiece is spec text, or a placeholder's CEL source when Expr is set.
type TemplatePiece struct {
	Text string `json:"text,omitempty"`
	Expr string `json:"expr,omitempty"`
}

// URLPosition classifies a position in a url by the text before it: the scheme and host
// (fixed), the path, or the query string and fragment.
func URLPosition(prefix string) SinkClass {
	k := strings.Index(prefix, "://")
	if k < 0 {
		return SinkFixed
	}
	rest := prefix[k+3:]
	j := strings.IndexAny(rest, "/?#")
	switch {
	case j < 0:
		return SinkFixed
	case strings.ContainsAny(rest[j:], "?#"):
		return SinkURLQuery
	}
	return SinkURLPath
}

// Stricter returns the class that refuses more of the two: a run-time position can only
// make a check stricter than the one the validator proved.
func Stricter(a, b SinkClass) SinkClass {
	rank := map[SinkClass]int{SinkEnv: 1, SinkArgTail: 1, SinkHeader: 2, SinkArg: 3, SinkQueryValue: 4, SinkPath: 4, SinkURLPath: 4, SinkURLQuery: 5, SinkBodyText: 5, SinkFixed: 6, SinkCode: 7}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
