package operate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
)

// RunBatcher is a store that creates many queued runs per commit (the SQL ledger).
type RunBatcher interface {
	NewBatchWriter(spec ledger.BatchSpec) ledger.RunWriter
}

// BulkRequest queues one run per line of a JSON Lines stream.
type BulkRequest struct {
	Pipeline *domain.Pipeline
	Lines    io.Reader
	// Source names the stream in messages: a path, or "stdin".
	Source string
	// MaxLineBytes caps one line, that is one run's input, as --max-input-bytes caps the input of
	// a single submission. Zero: 16 MiB.
	MaxLineBytes int
	// BatchRuns and BatchBytes bound a batch (one commit): at most so many runs, and at most so
	// many bytes of input unless a single input is larger. Zero: 500 runs, 4 MiB.
	BatchRuns  int
	BatchBytes int
	// LedgerWait is how long a batch is tried again while the ledger cannot be reached (a
	// PostgreSQL restart or failover) before the command gives up. Zero: 30 seconds.
	LedgerWait time.Duration
	// OnRefused, when set, hears of every refused line as soon as its batch is decided, in
	// line order (the result lists only the first MaxRefusalsListed).
	OnRefused func(LineRefusal)
}

// DefaultBatchRuns is the number of runs per commit unless told otherwise: past a few hundred,
// a larger batch saves little (measured in docs/performance.md).
const DefaultBatchRuns = 500

// MaxRefusalsListed bounds the refusals a BulkResult holds: memory stays bounded however many
// lines a file has. OnRefused hears of every one.
const MaxRefusalsListed = 1000

// The reasons a line is refused, as BulkResult reports them.
const (
	RefusedNotJSON   = "not_json"   // the line is not one JSON value
	RefusedNotObject = "not_object" // the line is JSON, but not an object
	RefusedTooLarge  = "too_large"  // the line is longer than the cap on one input
	RefusedSchema    = "schema"     // the input does not match the inputs schema
	RefusedKey       = "key"        // the idempotency key cannot be computed or is reserved
	RefusedConflict  = "conflict"   // the key belongs to a run with another input
	RefusedDisabled  = "disabled"   // the kill switch was thrown while the file was read
)

// LineRefusal is a line that did not become a run, and why. A refusal of the kill switch
// covers a range of lines, Line to Through.
type LineRefusal struct {
	Line    int    `json:"line"`
	Through int    `json:"through,omitempty"`
	Reason  string `json:"reason"`
	// Field is the JSON pointer of the offending value, when one is to blame.
	Field string `json:"field,omitempty"`
	Error string `json:"error"`
	// RunID is the run that holds the key of a conflicting line.
	RunID string `json:"run_id,omitempty"`
	// Kind is the failure kind a single submission of the line would have had.
	Kind Kind `json:"-"`
}

// BulkResult is what a bulk submission did, line by line summed up.
type BulkResult struct {
	Pipeline string `json:"pipeline"`
	Source   string `json:"source"`
	// Lines is the number of lines read, blank ones included.
	Lines      int `json:"lines"`
	Created    int `json:"created"`
	Duplicates int `json:"duplicates"`
	// DuplicatesByState counts the duplicates by the state of the run that holds their key.
	DuplicatesByState map[domain.RunState]int `json:"duplicates_by_state"`
	Refused           int                     `json:"refused"`
	Refusals          []LineRefusal           `json:"refusals"`
	// RefusalsNotListed counts the refusals beyond MaxRefusalsListed.
	RefusalsNotListed int `json:"refusals_not_listed,omitempty"`
	Batches           int `json:"batches"`
	// Worst is the gravest kind among the refusals (KindFailed when there is none): a conflict
	// or the kill switch before an invalid input.
	Worst Kind `json:"-"`
}

// queuedBatch is a batch read and checked, not yet written.
type queuedBatch struct {
	runs  []ledger.QueuedRun
	lines []int // the line of each run
	// refused are the lines of the batch's stretch refused while reading, in line order.
	refused []LineRefusal
}

// SubmitMany queues a run per line of req.Lines, in batches of one commit each, with exactly
// the checks and the idempotency key of a single Submit: each line is checked against the
// inputs schema, its key computed by the pipeline's rule (or the input's hash). A line that is
// not a JSON object, fails the schema or has no usable key is refused with its line number
// and does not stop the others; a line whose key already has a run with the same input, in
// the ledger or earlier in the file, is a duplicate; with another input, a conflict. Reading
// and checking the next batch overlaps with writing this one. The error is for what stops the
// whole stream: the kill switch thrown before it starts (KindDisabled, nothing read), a read
// error or the ledger failing; the result then says what was done up to there.
func (o *Ops) SubmitMany(ctx context.Context, actor string, req BulkRequest) (*BulkResult, error) {
	p := req.Pipeline
	res := &BulkResult{Pipeline: p.Name, Source: req.Source, DuplicatesByState: map[domain.RunState]int{}, Refusals: []LineRefusal{}}
	batcher, ok := o.Store.(RunBatcher)
	if !ok {
		return res, errorf(KindFailed, "this ledger cannot create runs in batches")
	}
	if off, reason, err := o.Store.PipelineDisabled(ctx, p.Name); err != nil {
		return res, err
	} else if off {
		return res, &Error{Kind: KindDisabled, Err: fmt.Errorf("pipeline %s is disabled (%s); no run was queued: %w", p.Name, reason, engine.ErrDisabled)}
	}
	eng, err := o.Engine(actor, noProviders)
	if err != nil {
		return res, err
	}
	w := batcher.NewBatchWriter(ledger.BatchSpec{Pipeline: p.Name, SpecText: string(p.Text), SpecHash: engine.Hash(p.Text),
		SpecPath: p.Path, Version: eng.Version, Actor: eng.Actor})
	defer w.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan *queuedBatch, 1)
	var readErr error
	go func() {
		defer close(batches)
		readErr = o.readBatches(ctx, eng, req, res, batches)
	}()
	// Batches are written in parallel where the ledger gains by it (PostgreSQL), and accounted
	// for in file order. A batch that shares a key with one still in flight waits for it, so
	// that which line is the duplicate (or the conflict) is what writing in order would make it.
	par := w.Parallel()
	var pending []*flight
	var werr error
	settle := func() {
		f := pending[0]
		pending = pending[1:]
		<-f.done
		if werr == nil {
			if werr = res.account(f, p.Name, req.OnRefused); werr != nil {
				cancel()
			}
		}
	}
	disabled := ""
	for b := range batches {
		if werr != nil {
			continue // drain, so that the reader ends
		}
		if disabled == "" {
			if off, reason, err := o.Store.PipelineDisabled(ctx, p.Name); err != nil {
				werr = err
				cancel()
				continue
			} else if off {
				disabled = reason
			}
		}
		wait := len(pending) >= par
		for _, f := range pending {
			wait = wait || f.shares(b)
		}
		for wait && len(pending) > 0 {
			settle()
			wait = len(pending) >= par
			for _, f := range pending {
				wait = wait || f.shares(b)
			}
		}
		f := &flight{b: b, disabled: disabled, done: make(chan struct{})}
		if disabled == "" && len(b.runs) > 0 {
			go func() {
				defer close(f.done)
				f.got, f.err = createWaiting(ctx, w, b.runs, req.LedgerWait)
			}()
		} else {
			close(f.done)
		}
		pending = append(pending, f)
	}
	for len(pending) > 0 {
		settle()
	}
	switch {
	case werr != nil:
		return res, werr
	case readErr != nil:
		return res, errorf(KindInvalid, "%s: line %d: %w", req.Source, res.Lines+1, readErr)
	}
	return res, nil
}

// readBatches reads the stream, checks each line and sends batches; it counts the lines read.
func (o *Ops) readBatches(ctx context.Context, eng *engine.Engine, req BulkRequest, res *BulkResult, out chan<- *queuedBatch) error {
	maxLine, maxRuns, maxBytes := req.MaxLineBytes, req.BatchRuns, req.BatchBytes
	if maxLine <= 0 {
		maxLine = 16 << 20
	}
	if maxRuns <= 0 || maxRuns > ledger.MaxBatchRuns {
		maxRuns = DefaultBatchRuns
	}
	if maxBytes <= 0 {
		maxBytes = 4 << 20
	}
	lr := newLineReader(req.Lines, maxLine)
	b, size := &queuedBatch{}, 0
	send := func() bool {
		select {
		case out <- b:
		case <-ctx.Done():
			return false
		}
		b, size = &queuedBatch{}, 0
		return true
	}
	now := time.Now()
	for {
		line, num, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			send()
			return err
		}
		res.Lines = num
		if tooLong {
			b.refused = append(b.refused, LineRefusal{Line: num, Reason: RefusedTooLarge, Kind: KindInvalid,
				Error: fmt.Sprintf("the line is longer than %d bytes, the cap on one input (raise it with --max-input-bytes or limits.max_input_bytes in pipectl.yaml)", maxLine)})
		} else if r, refusal := o.queued(eng, req.Pipeline, line, num, now); refusal != nil {
			b.refused = append(b.refused, *refusal)
		} else if r != nil {
			b.runs, b.lines = append(b.runs, *r), append(b.lines, num)
			size += len(r.Input)
		}
		if len(b.runs) >= maxRuns || size >= maxBytes {
			if !send() {
				return ctx.Err()
			}
			// Run ids start with their time: a later batch has later ids, so claims follow the file.
			now = time.Now()
		}
	}
	if len(b.runs) > 0 || len(b.refused) > 0 {
		send()
	}
	return nil
}

// queued checks one line and computes its run as a single Submit would; nil and no refusal
// for a blank line.
func (o *Ops) queued(eng *engine.Engine, p *domain.Pipeline, line []byte, num int, now time.Time) (*ledger.QueuedRun, *LineRefusal) {
	if num == 1 {
		line = bytes.TrimPrefix(line, []byte("\ufeff")) // a byte order mark some editors write
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, nil
	}
	refuse := func(reason, field string, k Kind, err error) (*ledger.QueuedRun, *LineRefusal) {
		return nil, &LineRefusal{Line: num, Reason: reason, Field: field, Error: err.Error(), Kind: k}
	}
	in, err := domain.DecodeJSON(line)
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return refuse(RefusedNotJSON, "", KindInvalid, fmt.Errorf("column %d: not JSON: %w", se.Offset, err))
		}
		return refuse(RefusedNotJSON, "", KindInvalid, fmt.Errorf("not JSON: %w", err))
	}
	if _, ok := in.(map[string]any); !ok {
		return refuse(RefusedNotObject, "", KindInvalid, fmt.Errorf("the line is %s, not an object: each line is the input of one run", jsonKind(in)))
	}
	if in, err = CheckInput(p, in); err != nil {
		field := ""
		var ie *InputError
		if errors.As(err, &ie) && len(ie.Reasons) > 0 {
			field = ie.Reasons[0].Path
			if field == "" {
				field = "/"
			}
		}
		return refuse(RefusedSchema, field, KindOf(err), err)
	}
	key, err := submitKey(eng, SubmitRequest{Pipeline: p}, in)
	if err == nil && key == "" {
		key, err = eng.RunKey(p, in)
	}
	if err != nil {
		return refuse(RefusedKey, "", KindInvalid, err)
	}
	canon, err := domain.CanonicalJSON(in)
	if err != nil {
		return refuse(RefusedNotJSON, "", KindInvalid, fmt.Errorf("input: %w", err))
	}
	return &ledger.QueuedRun{ID: engine.NewRunID(now), IdempotencyKey: key, InputHash: engine.Hash(canon), Input: canon}, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// createWaiting writes a batch, and writes it again while the ledger says it could not be
// reached before the commit (so nothing was written), for up to wait: a database restart
// during a long file costs a pause, not the rest of the file. An error at the commit itself is
// not retried: nobody can tell whether it was applied (running the file again settles it).
func createWaiting(ctx context.Context, w ledger.RunWriter, runs []ledger.QueuedRun, wait time.Duration) ([]*ledger.Existing, error) {
	if wait <= 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	pause := 100 * time.Millisecond
	for {
		got, err := w.Create(ctx, runs)
		if err == nil || !errors.Is(err, domain.ErrLedgerUnavailable) || time.Now().Add(pause).After(deadline) {
			return got, err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, err
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// flight is a batch being written (or refused by the kill switch).
type flight struct {
	b        *queuedBatch
	disabled string
	done     chan struct{}
	got      []*ledger.Existing
	err      error
	keys     map[string]bool
}

// shares says whether batch b has a key of this flight's batch.
func (f *flight) shares(b *queuedBatch) bool {
	if f.keys == nil {
		f.keys = make(map[string]bool, len(f.b.runs))
		for _, r := range f.b.runs {
			f.keys[r.IdempotencyKey] = true
		}
	}
	for _, r := range b.runs {
		if f.keys[r.IdempotencyKey] {
			return true
		}
	}
	return false
}

// account sums up a written batch and reports its refused lines in line order.
func (res *BulkResult) account(f *flight, pipeline string, onRefused func(LineRefusal)) error {
	b := f.b
	var decided []LineRefusal
	switch {
	case len(b.runs) == 0:
	case f.disabled != "":
		// Lines refused for themselves keep their own reason; the valid ones are refused as a
		// range, since the switch refuses them all alike.
		decided = append(decided, LineRefusal{Line: b.lines[0], Through: b.lines[len(b.lines)-1], Reason: RefusedDisabled, Kind: KindDisabled,
			Error: fmt.Sprintf("pipeline %s was disabled while the file was read (%s); these lines were not queued", pipeline, f.disabled)})
		res.Refused += len(b.runs) - 1 // the range counts as one below
	case f.err != nil:
		return f.err
	default:
		res.Batches++
		for i, ex := range f.got {
			switch {
			case ex == nil:
				res.Created++
			case ex.InputHash == b.runs[i].InputHash:
				res.Duplicates++
				res.DuplicatesByState[ex.State]++
			default:
				decided = append(decided, LineRefusal{Line: b.lines[i], Reason: RefusedConflict, Kind: KindConflict, RunID: ex.ID,
					Error: fmt.Sprintf("run %s has idempotency key %q with a different input", ex.ID, b.runs[i].IdempotencyKey)})
			}
		}
	}
	for _, r := range mergeByLine(b.refused, decided) {
		res.Refused++
		res.Worst = worse(res.Worst, r.Kind)
		if len(res.Refusals) < MaxRefusalsListed {
			res.Refusals = append(res.Refusals, r)
		} else {
			res.RefusalsNotListed++
		}
		if onRefused != nil {
			onRefused(r)
		}
	}
	return nil
}

// worse orders the kinds of refusals: the kill switch and conflicts (the ledger's state
// refused the line) before invalid inputs.
func worse(a, b Kind) Kind {
	rank := func(k Kind) int {
		switch k {
		case KindDisabled:
			return 3
		case KindConflict:
			return 2
		case KindFailed:
			return 0
		}
		return 1
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// mergeByLine merges two lists of refusals, each in line order.
func mergeByLine(a, b []LineRefusal) []LineRefusal {
	if len(b) == 0 {
		return a
	}
	out := make([]LineRefusal, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Line <= b[0].Line {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// String is the summary line of a result.
func (res *BulkResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d created, %d %s", res.Source, res.Created, res.Duplicates, plural(res.Duplicates, "duplicate"))
	if res.Duplicates > 0 {
		var parts []string
		for _, s := range domain.RunStates {
			if n := res.DuplicatesByState[s]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, s))
			}
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, ", %d refused", res.Refused)
	return b.String()
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
