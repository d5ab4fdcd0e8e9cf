package dsl

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"unicode"

	"github.com/pipectl/pipectl/internal/domain"
)

// patternVerdict explains why a string pattern does or does not keep a value safe in a sink
// class; why is empty when it does.
func patternVerdict(re *regexp.Regexp, class domain.SinkClass) (why string) {
	src := re.String()
	parsed, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return fmt.Sprintf("pattern %s does not parse: %v", strconv.Quote(src), err)
	}
	parsed = parsed.Simplify()
	if !anchored(parsed) {
		return fmt.Sprintf("pattern %s is not anchored at both ends (^...$), so it admits any text around a match", strconv.Quote(src))
	}
	if r, ok := badRune(alphabet(parsed), class.AllowsRune); ok {
		return fmt.Sprintf("pattern %s admits %s", strconv.Quote(src), describeRune(r))
	}
	first, _ := firstRunes(parsed)
	if r, ok := badRune(first, class.AllowsLeading); ok {
		return fmt.Sprintf("pattern %s admits %s at the start", strconv.Quote(src), describeRune(r))
	}
	if class.ForbidsEmpty() && re.MatchString("") {
		return fmt.Sprintf("pattern %s admits the empty text, which drops a path segment (.../users/ instead of .../users/42; require at least one character)", strconv.Quote(src))
	}
	if class.ForbidsDots() {
		for _, dots := range []string{".", ".."} {
			if re.MatchString(dots) {
				return fmt.Sprintf("pattern %s admits %q", strconv.Quote(src), dots)
			}
		}
	}
	return ""
}

func describeRune(r rune) string {
	switch r {
	case 0:
		return "NUL"
	case '\r':
		return "CR"
	case '\n':
		return "LF"
	case ' ':
		return "a space"
	}
	if r < 0x20 || r == 0x7f {
		return fmt.Sprintf("the control character %U", r)
	}
	return strconv.QuoteRune(r)
}

// runeSet is a union of inclusive rune ranges.
type runeSet [][2]rune

var everyRune = runeSet{{0, unicode.MaxRune}}

// badRune finds a rune of the set that ok refuses. The sets here are small unions of ranges,
// and the refused runes are few, so each refused candidate is tested against the ranges.
func badRune(set runeSet, ok func(rune) bool) (rune, bool) {
	for _, rg := range set {
		// Every refused rune of any class is below U+0080 or one of a few separators;
		// scanning the low part of a range and those separators is exhaustive.
		for r := rg[0]; r <= rg[1] && r < 0x80; r++ {
			if !ok(r) {
				return r, true
			}
		}
		for _, r := range []rune{0x85, 0xa0, 0x1680, 0x2000, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000} {
			if r >= rg[0] && r <= rg[1] && !ok(r) {
				return r, true
			}
		}
		if rg[0] <= 0x200a && rg[1] >= 0x2000 {
			for r := max(rg[0], 0x2000); r <= min(rg[1], 0x200a); r++ {
				if !ok(r) {
					return r, true
				}
			}
		}
		if rg[0] <= 0x9f && rg[1] >= 0x80 {
			for r := max(rg[0], 0x80); r <= min(rg[1], 0x9f); r++ {
				if !ok(r) {
					return r, true
				}
			}
		}
	}
	return 0, false
}

// anchored reports whether every match of re spans the whole text: each alternative begins
// with \A (^ outside multi-line mode) and ends with \z ($ outside multi-line mode).
func anchored(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if !anchored(s) {
				return false
			}
		}
		return len(re.Sub) > 0
	case syntax.OpCapture:
		return anchored(re.Sub[0])
	case syntax.OpConcat:
		return len(re.Sub) >= 2 && beginsAnchored(re.Sub[0]) && endsAnchored(re.Sub[len(re.Sub)-1])
	}
	return false
}

func beginsAnchored(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginText:
		return true
	case syntax.OpCapture:
		return beginsAnchored(re.Sub[0])
	case syntax.OpConcat:
		return len(re.Sub) > 0 && beginsAnchored(re.Sub[0])
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if !beginsAnchored(s) {
				return false
			}
		}
		return len(re.Sub) > 0
	}
	return false
}

func endsAnchored(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEndText:
		return true
	case syntax.OpCapture:
		return endsAnchored(re.Sub[0])
	case syntax.OpConcat:
		return len(re.Sub) > 0 && endsAnchored(re.Sub[len(re.Sub)-1])
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if !endsAnchored(s) {
				return false
			}
		}
		return len(re.Sub) > 0
	}
	return false
}

// alphabet over-approximates the runes any match can contain.
func alphabet(re *syntax.Regexp) runeSet {
	var out runeSet
	var walk func(*syntax.Regexp)
	walk = func(re *syntax.Regexp) {
		switch re.Op {
		case syntax.OpLiteral:
			for _, r := range re.Rune {
				out = append(out, literalRunes(r, re.Flags)...)
			}
		case syntax.OpCharClass:
			for i := 0; i+1 < len(re.Rune); i += 2 {
				out = append(out, [2]rune{re.Rune[i], re.Rune[i+1]})
			}
		case syntax.OpAnyCharNotNL:
			out = append(out, [2]rune{0, '\n' - 1}, [2]rune{'\n' + 1, unicode.MaxRune})
		case syntax.OpAnyChar:
			out = append(out, everyRune...)
		}
		for _, s := range re.Sub {
			walk(s)
		}
	}
	walk(re)
	return out
}

// literalRunes is a literal rune with its case-folded forms when the pattern ignores case
// (the Kelvin sign folds to k, so folding is not only ASCII).
func literalRunes(r rune, flags syntax.Flags) runeSet {
	out := runeSet{{r, r}}
	if flags&syntax.FoldCase != 0 {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			out = append(out, [2]rune{f, f})
		}
	}
	return out
}

// firstRunes over-approximates the runes a match can start with, and reports whether the
// expression can match the empty text.
func firstRunes(re *syntax.Regexp) (runeSet, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 0 {
			return nil, true
		}
		return literalRunes(re.Rune[0], re.Flags), false
	case syntax.OpCharClass:
		var out runeSet
		for i := 0; i+1 < len(re.Rune); i += 2 {
			out = append(out, [2]rune{re.Rune[i], re.Rune[i+1]})
		}
		return out, false
	case syntax.OpAnyCharNotNL:
		return runeSet{{0, '\n' - 1}, {'\n' + 1, unicode.MaxRune}}, false
	case syntax.OpAnyChar:
		return everyRune, false
	case syntax.OpCapture:
		return firstRunes(re.Sub[0])
	case syntax.OpStar, syntax.OpQuest:
		set, _ := firstRunes(re.Sub[0])
		return set, true
	case syntax.OpPlus:
		return firstRunes(re.Sub[0])
	case syntax.OpRepeat:
		set, empty := firstRunes(re.Sub[0])
		return set, empty || re.Min == 0
	case syntax.OpConcat:
		var out runeSet
		for _, s := range re.Sub {
			set, empty := firstRunes(s)
			out = append(out, set...)
			if !empty {
				return out, false
			}
		}
		return out, true
	case syntax.OpAlternate:
		var out runeSet
		anyEmpty := false
		for _, s := range re.Sub {
			set, empty := firstRunes(s)
			out = append(out, set...)
			anyEmpty = anyEmpty || empty
		}
		return out, anyEmpty
	case syntax.OpNoMatch:
		return nil, false
	}
	// Empty matches and assertions (^, $, \b) consume nothing.
	return nil, true
}
