package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowSink records each write it is given and takes a while over each, as a pipe to a busy
// reader would.
type slowSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	delay  time.Duration
	gate   chan struct{} // when set, each write waits for a receive from it
	// entered, when set, hears of each write as it starts (before the gate).
	entered chan struct{}
	err     error
}

func (s *slowSink) Write(p []byte) (int, error) {
	if s.entered != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
	}
	if s.gate != nil {
		<-s.gate
	}
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.writes++
	return s.buf.Write(p)
}

func (s *slowSink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Lines written from many goroutines arrive whole, each goroutine's in its order, and share
// the sink's writes.
func TestCoalescingWriterKeepsLinesWholeAndInOrder(t *testing.T) {
	sink := &slowSink{delay: 200 * time.Microsecond}
	c := newCoalescingWriter(sink)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				line := fmt.Sprintf("writer %d line %d %s\n", w, i, strings.Repeat("x", i%50))
				if n, err := c.Write([]byte(line)); n != len(line) || err != nil {
					t.Errorf("Write = %d, %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(sink.text(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines arrived, want %d", len(got), writers*lines)
	}
	next := make([]int, writers)
	for _, line := range got {
		var w, i int
		var pad string
		if _, err := fmt.Sscanf(line, "writer %d line %d %s", &w, &i, &pad); err != nil && i%50 != 0 {
			t.Fatalf("torn line %q: %v", line, err)
		}
		if i != next[w] || len(pad) != i%50 {
			t.Fatalf("writer %d: line %q arrived where line %d was due", w, line, next[w])
		}
		next[w]++
	}
	if sink.writes >= writers*lines {
		t.Errorf("%d writes for %d lines: nothing was written together", sink.writes, writers*lines)
	}
	t.Logf("%d lines in %d writes", writers*lines, sink.writes)
}

// A line written while nothing else is goes out without waiting for Close or more lines.
func TestCoalescingWriterWritesAnIdleLineAtOnce(t *testing.T) {
	sink := &slowSink{}
	c := newCoalescingWriter(sink)
	defer c.Close()
	c.Write([]byte("alone\n"))
	for deadline := time.Now().Add(10 * time.Second); sink.text() != "alone\n"; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the line is still queued: %q", sink.text())
		}
	}
}

// Writers wait while the queue is full, rather than holding without bound what a stuck
// terminal or pipe does not take; what they wrote arrives when it takes again.
func TestCoalescingWriterBoundsWhatIsQueued(t *testing.T) {
	sink := &slowSink{gate: make(chan struct{})}
	c := newCoalescingWriter(sink)
	chunk := bytes.Repeat([]byte("y"), 64<<10)
	returned := make(chan int, 100)
	go func() {
		for i := range 20 {
			c.Write(chunk)
			returned <- i
		}
		close(returned)
	}()
	// The sink holds the first write, of what was queued then (up to maxQueued); the queue
	// fills to maxQueued behind it, and the writer then waits.
	time.Sleep(50 * time.Millisecond)
	if n := len(returned); n*len(chunk) > 2*maxQueued {
		t.Fatalf("%d writes of %d bytes returned while the sink took nothing", n, len(chunk))
	}
	close(sink.gate)
	for range returned {
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(sink.text()); got != 20*len(chunk) {
		t.Fatalf("%d bytes arrived, want %d", got, 20*len(chunk))
	}
}

// The sink's error reaches the writers that come after it, and Close.
func TestCoalescingWriterReportsTheSinksError(t *testing.T) {
	broken := errors.New("broken pipe")
	sink := &slowSink{err: broken}
	c := newCoalescingWriter(sink)
	c.Write([]byte("lost\n"))
	var err error
	for deadline := time.Now().Add(10 * time.Second); err == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no write ever failed")
		}
		_, err = c.Write([]byte("more\n"))
	}
	if !errors.Is(err, broken) {
		t.Fatalf("Write = %v, want %v", err, broken)
	}
	if err := c.Close(); !errors.Is(err, broken) {
		t.Fatalf("Close = %v, want %v", err, broken)
	}
}

// Close waits for what is queued; what is written after it goes straight out, after that.
func TestCoalescingWriterAfterClose(t *testing.T) {
	sink := &slowSink{delay: 5 * time.Millisecond}
	c := newCoalescingWriter(sink)
	for i := range 10 {
		fmt.Fprintf(c, "before %d\n", i)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := ""
	for i := range 10 {
		want += fmt.Sprintf("before %d\n", i)
	}
	if sink.text() != want {
		t.Fatalf("after Close: %q", sink.text())
	}
	fmt.Fprintf(c, "after\n")
	if sink.text() != want+"after\n" {
		t.Fatalf("a write after Close: %q", sink.text())
	}
}

// A writer may reuse its buffer once Write returns (slog does): what was queued must be what
// was given then, not what the buffer holds when the queue goes out. A queue that kept the
// caller's slice would write another line's text, an unredacted one included.
func TestCoalescingWriterCopiesWhatItIsGiven(t *testing.T) {
	entered := make(chan struct{}, 1)
	sink := &slowSink{gate: make(chan struct{}), entered: entered}
	c := newCoalescingWriter(sink)
	buf := []byte("first line [REDACTED]\n")
	c.Write(buf)
	<-entered // the sink holds the first write, not yet copied
	c.Write(buf)
	copy(buf, "secret-token-123456789\n")
	close(sink.gate)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := sink.text(), "first line [REDACTED]\nfirst line [REDACTED]\n"; got != want {
		t.Fatalf("the sink got %q, want %q", got, want)
	}
}
