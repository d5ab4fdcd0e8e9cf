package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Recording is the file format of --llm-record and --llm-replay: every exchange of a run, in
// order, keyed by the request's content.
type Recording struct {
	Version   int        `json:"version"`
	Exchanges []Exchange `json:"exchanges"`
}

// Exchange is one request with its answer or its error.
type Exchange struct {
	Key      string       `json:"key"`
	Request  Request      `json:"request"`
	Response *Response    `json:"response,omitempty"`
	Error    *RecordedErr `json:"error,omitempty"`
}

// RecordedErr keeps what a replayed error needs to be classified the same way.
type RecordedErr struct {
	Message    string `json:"message"`
	Transient  bool   `json:"transient"`
	StatusCode int    `json:"status_code,omitempty"`
	Code       string `json:"code,omitempty"`
}

// Recorder writes every exchange of the providers it wraps to one file after each call,
// atomically, so that a crash loses at most the call in flight.
type Recorder struct {
	// Redact, when set, takes the secrets out of the file's JSON before it is written: a
	// provider error may quote the API key.
	Redact func([]byte) []byte
	path   string
	mu     sync.Mutex
	rec    Recording
}

// NewRecorder records into path.
func NewRecorder(path string) *Recorder {
	return &Recorder{path: path, rec: Recording{Version: 1}}
}

// Wrap returns a provider that passes requests to inner and records each exchange.
func (r *Recorder) Wrap(inner Provider) Provider { return recorded{r: r, inner: inner} }

type recorded struct {
	r     *Recorder
	inner Provider
}

func (p recorded) Complete(ctx context.Context, req Request) (Response, error) {
	resp, err := p.inner.Complete(ctx, req)
	return resp, p.r.add(req, resp, err)
}

func (r *Recorder) add(req Request, resp Response, err error) error {
	ex := Exchange{Key: req.Key(), Request: req}
	if err != nil {
		var pe *Error
		re := &RecordedErr{Message: err.Error()}
		if errors.As(err, &pe) {
			re.Transient, re.StatusCode, re.Code = pe.Transient, pe.StatusCode, pe.Code
		}
		ex.Error = re
	} else {
		ex.Response = &resp
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rec.Exchanges = append(r.rec.Exchanges, ex)
	if werr := writeAtomic(r.path, r.rec, r.Redact); werr != nil {
		return &Error{Err: fmt.Errorf("recording model exchanges: %w", werr)}
	}
	return err
}

func writeAtomic(path string, v any, redact func([]byte) []byte) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if redact != nil {
		data = redact(data)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Replayer answers from a recording and never reaches a provider. Requests with the same key
// get their recorded answers in order; the last one repeats.
type Replayer struct {
	path    string
	mu      sync.Mutex
	answers map[string][]Exchange
	used    map[string]int
}

// MaxRecordingBytes caps a recording file read by LoadReplayer: many answers, each far
// below DefaultMaxResponseBytes.
const MaxRecordingBytes = 64 << 20

// LoadReplayer reads a recording.
func LoadReplayer(path string) (*Replayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("llm replay: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRecordingBytes+1))
	if err != nil {
		return nil, fmt.Errorf("llm replay: %w", err)
	}
	if len(data) > MaxRecordingBytes {
		return nil, fmt.Errorf("llm replay %s: larger than %d bytes", path, MaxRecordingBytes)
	}
	var rec Recording
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("llm replay %s: not a recording: %w", path, err)
	}
	return NewReplayer(path, rec), nil
}

// NewReplayer answers from exchanges already in memory (the ledger's, for `pipectl replay`).
func NewReplayer(source string, rec Recording) *Replayer {
	r := &Replayer{path: source, answers: map[string][]Exchange{}, used: map[string]int{}}
	for _, ex := range rec.Exchanges {
		key := ex.Key
		if key == "" {
			key = ex.Request.Key()
		}
		r.answers[key] = append(r.answers[key], ex)
	}
	return r
}

// ErrNotRecorded means the recording has no answer for a request.
var ErrNotRecorded = errors.New("no recorded answer")

// Complete answers a request from the recording.
func (r *Replayer) Complete(ctx context.Context, req Request) (Response, error) {
	key := req.Key()
	r.mu.Lock()
	list := r.answers[key]
	i := r.used[key]
	if i < len(list)-1 {
		r.used[key]++
	}
	r.mu.Unlock()
	if len(list) == 0 {
		first := ""
		for _, m := range req.Messages {
			if m.Role == "user" {
				first = m.Content
				break
			}
		}
		if len(first) > 120 {
			first = first[:120] + "..."
		}
		return Response{}, &Error{Err: fmt.Errorf("%w in %s for step %q, model %s, request key %s (the prompt, schema or settings changed since recording?); first user message: %q",
			ErrNotRecorded, r.path, req.Step, req.Model, key, first)}
	}
	ex := list[min(i, len(list)-1)]
	if ex.Error != nil {
		return Response{}, &Error{Transient: ex.Error.Transient, StatusCode: ex.Error.StatusCode, Code: ex.Error.Code, Err: errors.New(ex.Error.Message)}
	}
	resp := *ex.Response
	// The answer is the recorded one, but no request reached a provider: its request id,
	// processing time and shaping belong to the recorded exchange, not to this call.
	resp.RequestID, resp.ProcessingMS, resp.Family = "", nil, ""
	return resp, nil
}

// Scripted answers each step from a list of contents, in order, whatever the request says:
// pipeline test cases give the model's answers per step.
type Scripted struct {
	mu      sync.Mutex
	answers map[string][]Response
	used    map[string]int
}

// NewScripted builds a provider from answers per step id.
func NewScripted(answers map[string][]Response) *Scripted {
	return &Scripted{answers: answers, used: map[string]int{}}
}

// Complete returns the step's next scripted answer.
func (s *Scripted) Complete(ctx context.Context, req Request) (Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.answers[req.Step]
	i := s.used[req.Step]
	if i >= len(list) {
		return Response{}, &Error{Err: fmt.Errorf("%w: the test case scripts %d answer(s) for step %q and the step asked for answer %d", ErrNotRecorded, len(list), req.Step, i+1)}
	}
	s.used[req.Step]++
	resp := list[i]
	if resp.FinishReason == "" {
		resp.FinishReason = FinishStop
	}
	return resp, nil
}

// Calls returns how many answers each step consumed.
func (s *Scripted) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.used))
	for k, v := range s.used {
		out[k] = v
	}
	return out
}

// Steps counts the recorded exchanges of each pipeline step, for a check before a run that a
// recording has answers for every model step at all.
func (r *Replayer) Steps() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, list := range r.answers {
		for _, ex := range list {
			out[ex.Request.Step]++
		}
	}
	return out
}
