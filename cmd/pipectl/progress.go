package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// isTerminal reports whether w is a terminal (golang.org/x/term).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// logFormat resolves the log format: --log-format, else PIPECTL_LOG_FORMAT, else text on a
// terminal and JSON lines otherwise.
func (a *app) logFormat() string {
	switch {
	case a.g.logFormat != "":
		return a.g.logFormat
	case os.Getenv("PIPECTL_LOG_FORMAT") != "":
		return os.Getenv("PIPECTL_LOG_FORMAT")
	case a.errTTY:
		return "text"
	}
	return "json"
}

// progress shows a run's steps as they happen on stderr: on a terminal, a status line with a
// spinner for the attempts in flight under the lines of those that finished; elsewhere, one
// plain line per finished attempt. Log lines written through it (Write) go above the status
// line. Text from the run (step ids, errors) goes through the redactor and is made visible.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	red   func([]byte) []byte
	live  bool
	color bool
	// running are the attempts in flight, by "step #attempt", with their start; called counts
	// the model calls of each already shown.
	running map[string]time.Time
	called  map[string]int
	frame   int
	shown   bool
	stop    chan struct{}
	done    sync.WaitGroup
	inner   engine.Observer
}

func (a *app) newProgress(inner engine.Observer) *progress {
	p := &progress{w: a.rawErr, red: func(b []byte) []byte { return visible(a.red.Bytes(b)) }, live: a.errTTY,
		color: a.errTTY && os.Getenv("NO_COLOR") == "", running: map[string]time.Time{}, called: map[string]int{}, stop: make(chan struct{}), inner: inner}
	if p.live {
		p.done.Add(1)
		go p.spin()
	}
	return p
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

func (p *progress) spin() {
	defer p.done.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.frame++
			p.redraw()
			p.mu.Unlock()
		}
	}
}

// Close stops the spinner and clears the status line.
func (p *progress) Close() {
	if p.live {
		close(p.stop)
		p.done.Wait()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

// clear erases the status line: carriage return, then erase to the end of the line.
func (p *progress) clear() {
	if p.live && p.shown {
		io.WriteString(p.w, "\r\x1b[K")
		p.shown = false
	}
}

func (p *progress) redraw() {
	if !p.live {
		return
	}
	p.clear()
	if len(p.running) == 0 {
		return
	}
	names := make([]string, 0, len(p.running))
	for n := range p.running {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %s", n, time.Since(p.running[n]).Round(100*time.Millisecond))
	}
	status := spinner[p.frame%len(spinner)] + " running " + strings.Join(parts, ", ")
	p.w.Write(p.red([]byte(status)))
	p.shown = true
}

// line prints a permanent line above the status line.
func (p *progress) line(mark, color, text string) {
	p.clear()
	if p.color {
		mark = "\x1b[" + color + "m" + mark + "\x1b[0m"
	}
	fmt.Fprintf(p.w, "%s %s\n", mark, p.red([]byte(text)))
	p.redraw()
}

// Write takes a log line: it goes above the status line.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	if _, err := p.w.Write(p.red(b)); err != nil {
		return 0, err
	}
	p.redraw()
	return len(b), nil
}

func attemptName(step *domain.Step, att *domain.Attempt) string {
	if att.ItemIndex != domain.NoItem {
		return fmt.Sprintf("%s[%d] #%d", step.ID, att.ItemIndex, att.Attempt)
	}
	return fmt.Sprintf("%s #%d", step.ID, att.Attempt)
}

func (p *progress) AttemptStarted(_ string, step *domain.Step, att *domain.Attempt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[attemptName(step, att)] = time.Now()
	p.redraw()
}

func (p *progress) AttemptFinished(pipeline string, step *domain.Step, att *domain.Attempt) {
	if p.inner != nil {
		p.inner.AttemptFinished(pipeline, step, att)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	name := attemptName(step, att)
	delete(p.running, name)
	for i, c := range att.Calls {
		if i >= p.called[name] {
			p.modelCall(name, c)
		}
	}
	delete(p.called, name)
	mark, color := "✓", "32"
	switch att.Outcome {
	case domain.OutcomeFailed:
		mark, color = "✗", "31"
	case domain.OutcomeNeedsReview, domain.OutcomeWaiting:
		mark, color = "‖", "33"
	case domain.OutcomeSkipped:
		mark, color = "-", "2"
	}
	text := fmt.Sprintf("%s %s (%s)", name, att.Outcome, (time.Duration(att.DurationMS) * time.Millisecond).String())
	if att.Error != "" {
		text += ": " + oneLine(firstLine(att.Error))
	}
	p.line(mark, color, text)
}

// ModelCalled shows a model call and the gate's verdict as soon as they happen, while the
// attempt goes on (a re-ask, say).
func (p *progress) ModelCalled(_ string, step *domain.Step, att *domain.Attempt, c domain.ModelCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name := attemptName(step, att)
	p.called[name]++
	p.modelCall(name, c)
}

func (p *progress) modelCall(name string, c domain.ModelCall) {
	verdict := ""
	if c.Verdict != "" {
		verdict = ", gate " + c.Verdict
	}
	p.line("·", "2", fmt.Sprintf("  model call %s re-ask %d: %s%s, %d+%d tokens, %dms", name, c.Reask, c.Outcome, verdict, c.PromptTokens, c.CompletionTokens, c.LatencyMS))
}

func (p *progress) RunChanged(pipeline string, to domain.RunState) {
	if p.inner != nil {
		p.inner.RunChanged(pipeline, to)
	}
}
