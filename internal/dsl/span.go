package dsl

import (
	"bytes"
	"unicode/utf8"
)

// fillEnds sets the end of every diagnostic that has none, from the source text: editors and
// CI annotations underline the offending token instead of one character.
func fillEnds(src []byte, ds []Diagnostic) {
	for i := range ds {
		d := &ds[i]
		if d.EndLine != 0 {
			continue
		}
		d.EndLine, d.EndColumn = d.Line, tokenEnd(src, d.Line, d.Column)
	}
}

// withEnd returns d with an end position, one character long when it has none.
func withEnd(d Diagnostic) Diagnostic {
	if d.Line < 1 {
		d.Line = 1
	}
	if d.Column < 1 {
		d.Column = 1
	}
	if d.EndLine < d.Line || (d.EndLine == d.Line && d.EndColumn <= d.Column) {
		d.EndLine, d.EndColumn = d.Line, d.Column+1
	}
	return d
}

// tokenEnd returns the column just past the YAML token that starts at line:col, or past the
// line's content when the token runs onto further lines. It reads only the one line, so it
// cannot be fooled into running far by hostile input; its answer is always at least col+1.
func tokenEnd(src []byte, line, col int) int {
	start := offsetOf(src, line, col)
	lineStart := bytes.LastIndexByte(src[:start], '\n') + 1
	lineEnd := bytes.IndexByte(src[start:], '\n')
	if lineEnd < 0 {
		lineEnd = len(src)
	} else {
		lineEnd += start
	}
	text := src[start:lineEnd]
	prefix := src[lineStart:start]
	end := len(text)
	// Expression findings point into a ${{ }} placeholder: underline up to its end.
	if open := bytes.LastIndex(prefix, []byte("${{")); open >= 0 && !bytes.Contains(prefix[open:], []byte("}}")) {
		if i := bytes.Index(text, []byte("}}")); i >= 0 {
			return col + max(1, utf8.RuneCount(bytes.TrimRight(text[:i+2], " \t")))
		}
	}
	switch {
	case len(text) == 0:
		return col + 1
	case bytes.HasPrefix(text, []byte("${{")):
		if i := bytes.Index(text, []byte("}}")); i >= 0 {
			end = i + 2
		}
	case text[0] == '"':
		end = quotedEnd(text, '"')
	case text[0] == '\'':
		end = quotedEnd(text, '\'')
	case text[0] == '|' || text[0] == '>' || text[0] == '[' || text[0] == '{':
		end = contentEnd(text)
	default:
		// A plain scalar ends at ": " (a key), at " #" (a comment) or, inside a flow
		// collection, at the next separator.
		inFlow := bytes.ContainsAny(bytes.ReplaceAll(prefix, []byte("${{"), nil), "[{")
		for i := 0; i < len(text); i++ {
			c := text[i]
			if c == ':' && (i+1 == len(text) || text[i+1] == ' ' || text[i+1] == '\t') ||
				c == '#' && i > 0 && (text[i-1] == ' ' || text[i-1] == '\t') ||
				inFlow && (c == ',' || c == ']' || c == '}') {
				end = i
				break
			}
		}
	}
	end = len(bytes.TrimRight(text[:end], " \t\r"))
	if end == 0 {
		return col + 1
	}
	return col + utf8.RuneCount(text[:end])
}

// quotedEnd returns the offset just past the closing quote of a quoted scalar that opens at
// text[0], or the line's content end when it closes on a later line.
func quotedEnd(text []byte, q byte) int {
	for i := 1; i < len(text); i++ {
		switch {
		case q == '"' && text[i] == '\\':
			i++
		case text[i] == q && q == '\'' && i+1 < len(text) && text[i+1] == '\'':
			i++
		case text[i] == q:
			return i + 1
		}
	}
	return contentEnd(text)
}

// contentEnd is the end of a line's text before a trailing comment.
func contentEnd(text []byte) int {
	for i := 1; i < len(text); i++ {
		if text[i] == '#' && (text[i-1] == ' ' || text[i-1] == '\t') {
			return i
		}
	}
	return len(text)
}
