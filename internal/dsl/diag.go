// Package dsl reads pipeline files: YAML with positions, the pipeline schema, expressions, the DAG and the taint rule.
package dsl

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Severity of a diagnostic. Only errors make a file invalid.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one finding, pinned to a place in a file. Its JSON form is part of the
// command line's contract (docs/ci.md lists the fields): every field is always present.
type Diagnostic struct {
	File string `json:"file"`
	// Line and Column (1-based, columns in Unicode code points) are where the finding starts.
	Line   int `json:"line"`
	Column int `json:"column"`
	// EndLine and EndColumn are just past the offending token (the end of its first line for
	// values spanning lines), as in SARIF regions.
	EndLine   int      `json:"end_line"`
	EndColumn int      `json:"end_column"`
	Severity  Severity `json:"severity"`
	// Field is the path of the offending value, such as steps[2].url; empty for file-level
	// findings.
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Text renders the diagnostic without its position.
func (d Diagnostic) Text() string {
	var b strings.Builder
	if d.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if d.Field != "" {
		b.WriteString(d.Field)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// String renders the diagnostic as path:line:col: message.
func (d Diagnostic) String() string {
	return fmt.Sprintf("%s:%d:%d: %s", d.File, d.Line, d.Column, d.Text())
}

// HasErrors reports whether any diagnostic is an error.
func HasErrors(ds []Diagnostic) bool {
	for _, d := range ds {
		if d.Severity == SeverityError {
			return true
		}
	}
	return false
}

// SortDiagnostics orders by file, position, then text, and drops exact repeats.
func SortDiagnostics(ds []Diagnostic) []Diagnostic {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.Text() < b.Text()
	})
	out := ds[:0]
	for i, d := range ds {
		if i > 0 && d == ds[i-1] {
			continue
		}
		out = append(out, d)
	}
	return out
}

// fieldPath turns a JSON pointer such as /steps/2/url into steps[2].url.
func fieldPath(ptr string) string {
	if ptr == "" {
		return ""
	}
	var b strings.Builder
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if !plainKey(tok) {
			// A key with spaces, dots or control characters is quoted, so that the field
			// stays on one line and reads unambiguously.
			b.WriteString("[" + strconv.Quote(tok) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

// plainKey reports whether a key can stand in a field path as it is.
func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '$') {
			return false
		}
	}
	return true
}

// pointerJoin appends one token to a JSON pointer, escaping it.
func pointerJoin(ptr string, tok any) string {
	switch t := tok.(type) {
	case int:
		return ptr + "/" + strconv.Itoa(t)
	default:
		s := fmt.Sprint(t)
		return ptr + "/" + strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
	}
}
