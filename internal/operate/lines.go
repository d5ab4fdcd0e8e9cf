package operate

import (
	"bufio"
	"errors"
	"io"
)

// lineReader reads a stream one line at a time and holds at most max bytes of a line: a longer
// line is reported as too long and skipped to its end without being kept, so that memory stays
// bounded whatever the stream holds. Lines end at "\n"; the last one may lack it.
type lineReader struct {
	r    *bufio.Reader
	max  int
	buf  []byte
	line int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its "\n", its 1-based number and whether it was longer
// than max (then line is nil). The line is valid until the next call. At the end of the
// stream it returns io.EOF; a read error ends it too, after the lines read before it.
func (l *lineReader) next() (line []byte, num int, tooLong bool, err error) {
	l.buf = l.buf[:0]
	read := false
	for {
		chunk, err := l.r.ReadSlice('\n')
		read = read || len(chunk) > 0
		if !tooLong {
			if len(l.buf)+len(chunk) > l.max+1 { // +1: the newline is not part of the line
				tooLong, l.buf = true, l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == nil:
			l.line++
			return l.finish(tooLong)
		case errors.Is(err, io.EOF) && read:
			// The last line, without a newline.
			l.line++
			return l.finish(tooLong)
		default:
			return nil, l.line, false, err
		}
	}
}

func (l *lineReader) finish(tooLong bool) ([]byte, int, bool, error) {
	if tooLong {
		return nil, l.line, true, nil
	}
	b := l.buf
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if len(b) > l.max {
		return nil, l.line, true, nil
	}
	return b, l.line, false, nil
}
