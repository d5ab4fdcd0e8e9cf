package operate

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// splitLines is the reference: what bytes.Split makes of the stream.
func splitLines(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func checkLines(t *testing.T, r io.Reader, data []byte, max int) {
	t.Helper()
	lr := newLineReader(r, max)
	want := splitLines(data)
	for i, w := range want {
		line, num, tooLong, err := lr.next()
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if num != i+1 {
			t.Fatalf("line %d numbered %d", i+1, num)
		}
		if tooLong != (len(w) > max) {
			t.Fatalf("line %d (%d bytes, max %d): tooLong=%v", i+1, len(w), max, tooLong)
		}
		if !tooLong && !bytes.Equal(line, w) {
			t.Fatalf("line %d: got %q, want %q", i+1, line, w)
		}
	}
	if _, _, _, err := lr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after %d lines: %v, want EOF", len(want), err)
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than the reader's buffer
	for _, tc := range []struct {
		name string
		data string
		max  int
	}{
		{"empty", "", 10},
		{"one line", `{"a":1}` + "\n", 10},
		{"no final newline", "a\nb", 10},
		{"blank lines", "\n\n\na\n\n", 10},
		{"exactly max", "0123456789\n0123456789", 10},
		{"one over max", "0123456789a\n0123456789a", 10},
		{"long line skipped", "a\n" + long + "\nb\n", 1 << 10},
		{"long line kept", "a\n" + long + "\nb\n", 1 << 20},
		{"long last line", "a\n" + long, 1 << 10},
		{"crlf", "a\r\nb\r\n", 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLines(t, strings.NewReader(tc.data), []byte(tc.data), tc.max)
			// A reader that returns a byte at a time, as a pipe may.
			checkLines(t, iotest.OneByteReader(strings.NewReader(tc.data)), []byte(tc.data), tc.max)
		})
	}
}

func TestLineReaderError(t *testing.T) {
	boom := errors.New("boom")
	lr := newLineReader(io.MultiReader(strings.NewReader("a\nb"), iotest.ErrReader(boom)), 10)
	if line, num, _, err := lr.next(); err != nil || string(line) != "a" || num != 1 {
		t.Fatalf("%q %d %v", line, num, err)
	}
	if _, _, _, err := lr.next(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the read error", err)
	}
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint16(2))
	f.Add([]byte("{\"a\":1}\r\n[1]\n"), uint16(0))
	f.Add(bytes.Repeat([]byte("x"), 70<<10), uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		checkLines(t, bytes.NewReader(data), data, int(max))
	})
}
