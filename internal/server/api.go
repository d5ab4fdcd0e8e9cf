package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// readBody reads the capped body; past the cap it answers 413 and reports false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		s.problem(w, r, http.StatusRequestEntityTooLarge, "too-large", fmt.Sprintf("the body exceeds %d bytes", mbe.Limit), nil)
		return nil, false
	case err != nil:
		s.problem(w, r, http.StatusBadRequest, "invalid", "reading the body: "+err.Error(), nil)
		return nil, false
	}
	return data, true
}

// decode reads a JSON object body into v; unknown fields are errors, as in pipeline files.
// An empty body leaves v as it is.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	data, ok := s.readBody(w, r)
	if !ok {
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.problem(w, r, http.StatusBadRequest, "invalid", "the body is not the expected JSON: "+err.Error(), nil)
		return false
	}
	if dec.More() {
		s.problem(w, r, http.StatusBadRequest, "invalid", "the body holds more than one JSON value", nil)
		return false
	}
	return true
}

// input reads a run input: any JSON value, numbers kept exact.
func (s *Server) input(w http.ResponseWriter, r *http.Request) (any, bool) {
	data, ok := s.readBody(w, r)
	if !ok {
		return nil, false
	}
	v, err := decodeInput(data)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, "invalid", "input is not JSON: "+err.Error(), nil)
		return nil, false
	}
	return v, true
}

// decodeInput reads a run input; an empty body is the empty object.
func decodeInput(data []byte) (any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return map[string]any{}, nil
	}
	return domain.DecodeJSON(data)
}

func (s *Server) pipeline(w http.ResponseWriter, r *http.Request) (*domain.Pipeline, bool) {
	name := r.PathValue("name")
	p, ok := s.cfg.Pipelines[name]
	if !ok {
		s.problem(w, r, http.StatusNotFound, "not-found", fmt.Sprintf("no pipeline %s is served from %s", name, s.cfg.PipelineDir), nil)
	}
	return p, ok
}

type pipelineDoc struct {
	Name           string     `json:"name"`
	Description    string     `json:"description,omitempty"`
	Enabled        bool       `json:"enabled"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	SpecHash       string     `json:"spec_hash"`
	Path           string     `json:"path"`
	Triggers       triggerDoc `json:"triggers"`
	NextScheduled  *time.Time `json:"next_scheduled_at,omitempty"`
}

type triggerDoc struct {
	Webhook  bool         `json:"webhook"`
	Schedule *scheduleDoc `json:"schedule,omitempty"`
}

type scheduleDoc struct {
	Cron     string `json:"cron,omitempty"`
	Every    string `json:"every,omitempty"`
	Timezone string `json:"timezone,omitempty"`
	CatchUp  string `json:"catch_up"`
}

func (s *Server) listPipelines(w http.ResponseWriter, r *http.Request) {
	names := make([]string, 0, len(s.cfg.Pipelines))
	for n := range s.cfg.Pipelines {
		names = append(names, n)
	}
	sort.Strings(names)
	out := []pipelineDoc{}
	for _, n := range names {
		p := s.cfg.Pipelines[n]
		off, reason, err := s.cfg.Ops.Store.PipelineDisabled(r.Context(), n)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d := pipelineDoc{Name: n, Description: p.Description, Enabled: !off, DisabledReason: reason, SpecHash: engine.Hash(p.Text), Path: p.Path}
		d.Triggers.Webhook = p.Triggers.Webhook != nil
		if sc := p.Triggers.Schedule; sc != nil {
			d.Triggers.Schedule = &scheduleDoc{Cron: sc.Cron, Timezone: sc.Timezone, CatchUp: sc.CatchUp}
			if sc.Every > 0 {
				d.Triggers.Schedule.Every = sc.Every.String()
			}
			if t, ok := s.cfg.NextSlot(n); ok {
				u := t.UTC()
				d.NextScheduled = &u
			}
		}
		out = append(out, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"pipelines": out})
}

// idempotencyKeys are printable and short: they become ledger keys.
var validKey = regexp.MustCompile(`^[\x21-\x7e]{1,200}$`)

// submit creates a queued run: 201 for a new run, 200 with the same document for a
// duplicate, 409 for a key reused with another input, 422 for schema errors, 423 when disabled.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pipeline(w, r)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" && !validKey.MatchString(key) {
		s.problem(w, r, http.StatusBadRequest, "invalid", "Idempotency-Key must be 1 to 200 printable ASCII characters", nil)
		return
	}
	in, ok := s.input(w, r)
	if !ok {
		return
	}
	if key != "" {
		key = "key:" + key
	}
	res, err := s.cfg.Ops.Submit(r.Context(), actorOf(r), operate.SubmitRequest{Pipeline: p, Input: in, Key: key})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.created(w, r, res)
}

// created answers a submission: 201 and Location for a new run, 200 and the same document
// (the run as it stands now) for a duplicate.
func (s *Server) created(w http.ResponseWriter, r *http.Request, res *engine.Result) {
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/api/v1/runs/"+res.Run.ID)
	writeJSON(w, status, operate.RunViewOf(res.Run))
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (s *Server) disable(w http.ResponseWriter, r *http.Request) { s.toggle(w, r, true) }
func (s *Server) enable(w http.ResponseWriter, r *http.Request)  { s.toggle(w, r, false) }

func (s *Server) toggle(w http.ResponseWriter, r *http.Request, disabled bool) {
	p, ok := s.pipeline(w, r)
	if !ok {
		return
	}
	var body reasonBody
	if !s.decode(w, r, &body) {
		return
	}
	if err := s.cfg.Ops.SetDisabled(r.Context(), actorOf(r), p.Name, disabled, body.Reason); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": p.Name, "enabled": !disabled, "by": actorOf(r), "reason": body.Reason})
}

// page reads the list parameters shared by runs and the dead-letter queue.
func (s *Server) page(w http.ResponseWriter, r *http.Request, f *ledger.RunFilter) (int, bool) {
	q := r.URL.Query()
	f.Pipeline = q.Get("pipeline")
	if st := q.Get("state"); st != "" {
		if !domain.RunState(st).Valid() {
			s.problem(w, r, http.StatusBadRequest, "invalid", fmt.Sprintf("unknown state %q; states: %s", st, operate.StatesList()), nil)
			return 0, false
		}
		f.State = domain.RunState(st)
	}
	if since := q.Get("since"); since != "" {
		t, err := parseSince(since)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, "invalid", err.Error(), nil)
			return 0, false
		}
		f.Since = t
	}
	limit := 50
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			s.problem(w, r, http.StatusBadRequest, "invalid", "limit must be 1 to 500", nil)
			return 0, false
		}
		limit = n
	}
	if c := q.Get("cursor"); c != "" {
		cur, err := decodeCursor(c)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, "invalid", "cursor is not one this server issued", nil)
			return 0, false
		}
		f.After = cur
	}
	f.Limit = limit + 1 // one more tells whether another page follows
	return limit, true
}

// parseSince reads an RFC 3339 time or a duration back from now (24h).
func parseSince(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("since must be an RFC 3339 time or a positive duration such as 24h, not %q", v)
	}
	return time.Now().Add(-d), nil
}

func encodeCursor(r *domain.Run) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(r.CreatedAt.UnixMilli(), 10) + "." + r.ID))
}

func decodeCursor(c string) (*ledger.Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, err
	}
	msStr, id, ok := strings.Cut(string(raw), ".")
	ms, err := strconv.ParseInt(msStr, 10, 64)
	if !ok || err != nil || id == "" {
		return nil, errors.New("bad cursor")
	}
	return &ledger.Cursor{CreatedAt: time.UnixMilli(ms), ID: id}, nil
}

type runPage struct {
	Runs       []operate.RunView `json:"runs"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) {
	var f ledger.RunFilter
	limit, ok := s.page(w, r, &f)
	if !ok {
		return
	}
	s.respondPage(w, r, f, limit)
}

func (s *Server) dlq(w http.ResponseWriter, r *http.Request) {
	f := ledger.RunFilter{}
	limit, ok := s.page(w, r, &f)
	if !ok {
		return
	}
	f.State = domain.StateFailedPermanent // whatever ?state said
	s.respondPage(w, r, f, limit)
}

func (s *Server) respondPage(w http.ResponseWriter, r *http.Request, f ledger.RunFilter, limit int) {
	runs, err := s.cfg.Ops.List(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := runPage{Runs: []operate.RunView{}}
	if len(runs) > limit {
		runs = runs[:limit]
		page.NextCursor = encodeCursor(runs[limit-1])
	}
	page.Runs = operate.RunViews(runs)
	writeJSON(w, http.StatusOK, page)
}

// getRun returns the document runs show --format json prints.
func (s *Server) getRun(w http.ResponseWriter, r *http.Request) {
	doc, _, err := s.cfg.Ops.Show(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

type reviewBody struct {
	Decision     string `json:"decision"`
	ProposalHash string `json:"proposal_hash"`
	Note         string `json:"note"`
}

type decidedDoc struct {
	Run          operate.RunView `json:"run"`
	Step         string          `json:"step"`
	ProposalHash string          `json:"proposal_hash,omitempty"`
	Decision     string          `json:"decision"`
	By           string          `json:"by"`
}

// review decides on a run in needs_review; an approval must name the proposal hash it was
// shown. The run is handed to workers.
func (s *Server) review(w http.ResponseWriter, r *http.Request) {
	var body reviewBody
	if !s.decode(w, r, &body) {
		return
	}
	if body.Decision != "approve" && body.Decision != "reject" {
		s.problem(w, r, http.StatusBadRequest, "invalid", `decision must be "approve" or "reject"`, nil)
		return
	}
	d, err := s.cfg.Ops.Review(r.Context(), actorOf(r), operate.ReviewRequest{RunID: r.PathValue("id"), Approve: body.Decision == "approve",
		ProposalHash: body.ProposalHash, RequireHash: true, Note: body.Note, Enqueue: true})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, decidedDoc{Run: operate.RunViewOf(d.Run), Step: d.Step, ProposalHash: d.ProposalHash, Decision: body.Decision + "d", By: actorOf(r)})
}

type signalBody struct {
	Step string          `json:"step"`
	Data json.RawMessage `json:"data"`
}

func (s *Server) signal(w http.ResponseWriter, r *http.Request) {
	var body signalBody
	if !s.decode(w, r, &body) {
		return
	}
	if body.Step == "" || len(body.Data) == 0 {
		s.problem(w, r, http.StatusBadRequest, "invalid", "step and data are required", nil)
		return
	}
	payload, err := domain.DecodeJSON(body.Data)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, "invalid", "data is not JSON: "+err.Error(), nil)
		return
	}
	d, err := s.cfg.Ops.Signal(r.Context(), actorOf(r), operate.SignalRequest{RunID: r.PathValue("id"), Step: body.Step, Payload: payload, Enqueue: true})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, decidedDoc{Run: operate.RunViewOf(d.Run), Step: d.Step, Decision: "signalled", By: actorOf(r)})
}

func (s *Server) redrive(w http.ResponseWriter, r *http.Request) {
	run, err := s.cfg.Ops.Redrivable(r.Context(), r.PathValue("id"))
	if err == nil {
		run, err = s.cfg.Ops.Redrive(r.Context(), actorOf(r), run)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, operate.RunViewOf(run))
}

type replayBody struct {
	From string `json:"from"`
	LLM  string `json:"llm"`
}

type replayDoc struct {
	Run    operate.RunView `json:"run"`
	Reused []string        `json:"reused"`
}

// replay creates a replay run queued for workers.
func (s *Server) replay(w http.ResponseWriter, r *http.Request) {
	var body replayBody
	if !s.decode(w, r, &body) {
		return
	}
	res, err := s.cfg.Ops.Replay(r.Context(), actorOf(r), operate.ReplayRequest{RunID: r.PathValue("id"), From: body.From, LLM: body.LLM, Enqueue: true})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reused := res.Reused
	if reused == nil {
		reused = []string{}
	}
	w.Header().Set("Location", "/api/v1/runs/"+res.Run.ID)
	writeJSON(w, http.StatusCreated, replayDoc{Run: operate.RunViewOf(res.Run), Reused: reused})
}

type noteBody struct {
	Text string `json:"text"`
}

func (s *Server) note(w http.ResponseWriter, r *http.Request) {
	var body noteBody
	if !s.decode(w, r, &body) {
		return
	}
	run, err := s.cfg.Ops.Note(r.Context(), actorOf(r), r.PathValue("id"), body.Text)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"run": run.ID, "actor": actorOf(r), "text": strings.TrimSpace(body.Text)})
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	since := 24 * time.Hour
	if v := r.URL.Query().Get("since"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			s.problem(w, r, http.StatusBadRequest, "invalid", "since must be a positive duration such as 24h", nil)
			return
		}
		since = d
	}
	stats, breaches, err := s.cfg.Ops.Stats(r.Context(), time.Now().Add(-since), r.URL.Query().Get("pipeline"), true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if stats == nil {
		stats = []ledger.PipelineStats{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"since": since.String(), "pipelines": stats, "breaches": breaches})
}
