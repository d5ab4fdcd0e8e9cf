package dsl

import (
	"fmt"
	"strings"
)

// Placeholder is one ${{ expr }} inside a template string.
type Placeholder struct {
	// Expr is the CEL source between the braces.
	Expr string
	// Start and End are byte offsets of "${{" and just past "}}" in the template.
	Start, End int
	// ExprStart is the byte offset of Expr in the template.
	ExprStart int
}

// Template is a parsed template string.
type Template struct {
	Text         string
	Placeholders []Placeholder
}

// Single reports whether the template is exactly one placeholder (surrounding blanks allowed),
// in which case it evaluates to the expression's typed value rather than text.
func (t Template) Single() bool {
	return len(t.Placeholders) == 1 &&
		strings.TrimSpace(t.Text[:t.Placeholders[0].Start]) == "" &&
		strings.TrimSpace(t.Text[t.Placeholders[0].End:]) == ""
}

// TemplateError points at the byte offset in the template where scanning failed.
type TemplateError struct {
	Offset int
	Msg    string
}

func (e *TemplateError) Error() string { return e.Msg }

// ParseTemplate finds the placeholders of s. CEL string literals and map literals may hold
// "}}", so the scanner tracks quotes and brace depth instead of searching for the first "}}".
func ParseTemplate(s string) (Template, error) {
	t := Template{Text: s}
	i := 0
	for {
		j := strings.Index(s[i:], "${{")
		if j < 0 {
			return t, nil
		}
		start := i + j
		exprStart := start + 3
		end, err := scanExpression(s, exprStart)
		if err != nil {
			return t, err
		}
		expr := s[exprStart:end]
		if strings.TrimSpace(expr) == "" {
			return t, &TemplateError{Offset: start, Msg: "empty ${{ }} placeholder"}
		}
		t.Placeholders = append(t.Placeholders, Placeholder{Expr: expr, Start: start, End: end + 2, ExprStart: exprStart})
		i = end + 2
	}
}

// scanExpression returns the offset of the "}}" that closes the placeholder opened before from.
func scanExpression(s string, from int) (int, error) {
	depth := 0
	for i := from; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			end, err := skipString(s, i)
			if err != nil {
				return 0, err
			}
			i = end
		case '{':
			depth++
		case '}':
			if depth == 0 {
				if i+1 < len(s) && s[i+1] == '}' {
					return i, nil
				}
				return 0, &TemplateError{Offset: i, Msg: "unbalanced '}' in ${{ }} placeholder"}
			}
			depth--
		}
	}
	return 0, &TemplateError{Offset: from - 3, Msg: "unterminated ${{ placeholder: missing }}"}
}

// skipString returns the offset of the closing quote of the CEL string literal opening at i,
// handling triple quotes and escapes.
func skipString(s string, i int) (int, error) {
	q := s[i]
	if strings.HasPrefix(s[i:], strings.Repeat(string(q), 3)) {
		end := strings.Index(s[i+3:], strings.Repeat(string(q), 3))
		if end < 0 {
			return 0, &TemplateError{Offset: i, Msg: "unterminated string literal in ${{ }} placeholder"}
		}
		return i + 3 + end + 2, nil
	}
	raw := i > 0 && (s[i-1] == 'r' || s[i-1] == 'R')
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if !raw {
				j++
			}
		case q:
			return j, nil
		case '\n':
			return 0, &TemplateError{Offset: i, Msg: "unterminated string literal in ${{ }} placeholder"}
		}
	}
	return 0, &TemplateError{Offset: i, Msg: fmt.Sprintf("unterminated string literal %c in ${{ }} placeholder", q)}
}
