package dsl

import (
	"testing"
	"unicode/utf8"
)

func TestTokenEnd(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		line, col int
		want      int
	}{
		{"plain value", "a: hello world\n", 1, 4, 15},
		{"plain value before a comment", "a: hello # note\n", 1, 4, 9},
		{"key", "  timout: 5s\n", 1, 3, 9},
		{"key without a value", "  timout:\n", 1, 3, 9},
		{"double-quoted key with escapes", "  \"a\\\"b\\tc\": 1\n", 1, 3, 12},
		{"single-quoted with a doubled quote", "x: 'it''s' # c\n", 1, 4, 11},
		{"quote left open", "x: \"abc\n", 1, 4, 8},
		{"placeholder", "u: https://x/${{ steps.a.output.team }}/z\n", 1, 14, 40},
		{"inside a placeholder", "u: https://x/${{ steps.a.output.team }}/z\n", 1, 18, 40},
		{"in a flow mapping", "s: {id: a, type: transform}\n", 1, 9, 10},
		{"flow value ends at the brace", "s: {id: a, type: transform}\n", 1, 18, 27},
		{"block scalar indicator", "p: |\n  text\n", 1, 4, 5},
		{"multi-byte runes count once", "k: héllo wörld\n", 1, 4, 15},
		{"past the end of the line", "a: b\n", 1, 40, 41},
		{"past the end of the file", "a: b\n", 9, 1, 2},
		{"empty file", "", 1, 1, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokenEnd([]byte(tc.src), tc.line, tc.col); got != tc.want {
				t.Fatalf("tokenEnd(%q, %d, %d) = %d, want %d", tc.src, tc.line, tc.col, got, tc.want)
			}
		})
	}
}

// FuzzTokenEnd: any source and any position give an end past the start and within the line,
// without a panic.
func FuzzTokenEnd(f *testing.F) {
	for _, s := range []string{"a: b\n", "  \"x\\\"y\": 1", "u: ${{ a }}/${{ b", "s: {a: [1, 2], 'b''c': d} # e", "p: |\n  t\n"} {
		f.Add(s, 1, 1)
		f.Add(s, 1, 4)
	}
	f.Fuzz(func(t *testing.T, src string, line, col int) {
		if !utf8.ValidString(src) || line < 1 || col < 1 || line > 1000 || col > 1000 {
			return
		}
		end := tokenEnd([]byte(src), line, col)
		if end <= col {
			t.Fatalf("end %d not past start %d", end, col)
		}
		off := offsetOf([]byte(src), line, col)
		rest := 0
		for i := off; i < len(src) && src[i] != '\n'; {
			_, size := utf8.DecodeRuneInString(src[i:])
			i += size
			rest++
		}
		if end > col+max(rest, 1) {
			t.Fatalf("end %d runs past the line (start %d, %d runes left)", end, col, rest)
		}
	})
}
