package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// safeWriter is what every command writes through. It redacts every secret the process holds
// (a ledger row written before a secret was known, an error that quotes a DSN), and for text
// meant for people it renders control characters and invisible formatting characters visibly:
// a model proposal, an input or an error text must not move the cursor, repaint the screen,
// set the window title or reorder what a reviewer reads. JSON output is only redacted, so that
// it stays exactly what the ledger holds.
type safeWriter struct {
	w    io.Writer
	red  *domain.Redactor
	text bool
}

func (s *safeWriter) Write(p []byte) (int, error) {
	out := s.red.Bytes(p)
	if s.text {
		out = visible(out)
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// visible escapes, in text meant for a terminal: C0 control characters but newline and tab
// (\x1b, \r, \b, ...) and bytes that are not UTF-8 (as \xNN); DEL, C1 control characters (a
// terminal may read U+009B as the start of an escape sequence) and the bidirectional and
// zero-width formatting characters that make text read differently from what it is (as \uNNNN).
func visible(b []byte) []byte {
	if clean(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			out = fmt.Appendf(out, `\x%02x`, b[i])
		case r == '\n' || r == '\t':
			out = append(out, byte(r))
		case r < 0x20:
			out = fmt.Appendf(out, `\x%02x`, r)
		case r == 0x7f || invisible(r):
			// \uNNNN is also a JSON escape of the same character: a JSON log line on stderr,
			// where DEL and these are not escaped by the encoder, stays valid and exact.
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// clean is the fast path: printable ASCII, newlines and tabs only.
func clean(b []byte) bool {
	for _, c := range b {
		if c >= 0x7f || c < 0x20 && c != '\n' && c != '\t' {
			return false
		}
	}
	return true
}

func invisible(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1 controls
	case r >= 0x200b && r <= 0x200f: // zero-width space and joiners, LRM, RLM
	case r >= 0x2028 && r <= 0x202e: // line and paragraph separators, bidi embeddings and overrides
	case r >= 0x2066 && r <= 0x2069: // bidi isolates
	case r == 0x061c || r == 0xfeff:
	default:
		return false
	}
	return true
}

// oneLine is for a field of one line in a table or a labelled line: the newlines, carriage
// returns and tabs of untrusted text are shown, not obeyed, so that a field cannot forge the
// lines or columns around it.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") {
		return s
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

// redactingObserver passes the engine's events to the metrics with their label values
// redacted. The attempt's model calls are redacted already (the engine records them so), and
// pipeline and step names are validated identifiers: this only matters when a secret happens
// to equal one, but a label is a sink like any other.
type redactingObserver struct {
	inner engine.Observer
	red   *domain.Redactor
}

func (o redactingObserver) AttemptFinished(pipeline string, step *domain.Step, att *domain.Attempt) {
	s := *step
	s.ID = o.red.String(s.ID)
	o.inner.AttemptFinished(o.red.String(pipeline), &s, att)
}

func (o redactingObserver) RunChanged(pipeline string, to domain.RunState) {
	o.inner.RunChanged(o.red.String(pipeline), to)
}

// coalescingWriter writes what it is given to w in order, from a goroutine of its own: a write
// returns once its bytes are queued, and what is queued while the last write is on its way goes
// out as one write when it returns. An idle process's line goes out at once; a busy worker's
// log lines (one per attempt and one per run, from every slot) share their system calls, which
// had cost a busy worker a sixth of its CPU, one write(2) per line. What is queued when the
// process is killed is lost: the lines of the last write's duration, microseconds, not a
// buffer's worth or a timer's. Queued bytes are bounded: a writer waits while maxQueued are
// waiting for w (a slow terminal or pipe slows the writers down, as a direct write would).
type coalescingWriter struct {
	w      io.Writer
	mu     sync.Mutex
	cond   *sync.Cond // signalled when queued bytes go out and when the writer stops
	queued []byte
	spare  []byte
	busy   bool  // the goroutine holds bytes it has not written yet
	closed bool  // Close was called: writes go straight to w
	err    error // the first error of w, returned to every later write
}

const maxQueued = 256 << 10

func newCoalescingWriter(w io.Writer) *coalescingWriter {
	c := &coalescingWriter{w: w}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *coalescingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.queued) >= maxQueued && c.err == nil && !c.closed {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closed {
		// After Close bytes go out here, once what was queued before is out.
		for c.busy {
			c.cond.Wait()
		}
		if _, err := c.w.Write(p); err != nil {
			c.err = err
			return 0, err
		}
		return len(p), nil
	}
	c.queued = append(c.queued, p...)
	if !c.busy {
		c.busy = true
		go c.drain()
	}
	return len(p), nil
}

// drain writes the queue until it is empty, then ends; the next write starts another. A
// goroutine per busy spell rather than one for the process: nothing is left running when the
// queue is empty, and a command that never writes starts none.
func (c *coalescingWriter) drain() {
	c.mu.Lock()
	for len(c.queued) > 0 && c.err == nil {
		out := c.queued
		c.queued, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		_, err := c.w.Write(out)
		c.mu.Lock()
		c.spare = out[:0]
		if err != nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
	c.queued = c.queued[:0]
	c.busy = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Close waits until everything queued is written; later writes go straight to w. It returns
// the first error of w.
func (c *coalescingWriter) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.busy {
		c.cond.Wait()
	}
	return c.err
}
