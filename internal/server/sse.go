package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/operate"
)

// stepEvent is the progress of one step attempt on an event stream.
type stepEvent struct {
	Step       string `json:"step"`
	Item       *int   `json:"item,omitempty"`
	Attempt    int    `json:"attempt"`
	Outcome    string `json:"outcome"`
	ErrorClass string `json:"error_class,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// events streams a run's progress as Server-Sent Events: "transition" for each state change
// (with its ledger id as the event id, so a client reconnecting with Last-Event-ID misses
// none), "step" when an attempt starts or ends, and "end" when the run reaches a final state.
// The ledger is the source: any process may be executing the run.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	run, err := s.cfg.Ops.Run(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var lastEvent int64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		lastEvent, _ = strconv.ParseInt(strings.TrimPrefix(v, "t"), 10, 64)
	}
	flusher, release, ok := s.openStream(w, r)
	if !ok {
		return
	}
	defer release()
	seen := map[int64]string{} // attempt id -> outcome already sent
	tick := time.NewTicker(s.cfg.EventPoll)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		// The state first: when it is final, the events read after it include its transition,
		// so the end event never overtakes the news.
		latest, err := s.cfg.Ops.Store.GetRun(ctx, run.ID)
		if err != nil {
			return
		}
		events, err := s.cfg.Ops.Store.Events(ctx, run.ID)
		if err != nil {
			return
		}
		attempts, err := s.cfg.Ops.Store.Attempts(ctx, run.ID)
		if err != nil {
			return
		}
		// News of this poll, in the order it happened.
		var steps, transitions []item
		for _, a := range attempts {
			if seen[a.ID] == a.Outcome {
				continue
			}
			seen[a.ID] = a.Outcome
			ev := stepEvent{Step: a.StepID, Attempt: a.Attempt, Outcome: a.Outcome, ErrorClass: string(a.ErrorClass), Error: a.Error, DurationMS: a.DurationMS}
			if a.ItemIndex != domain.NoItem {
				i := a.ItemIndex
				ev.Item = &i
			}
			at := a.StartedAt
			if !a.FinishedAt.IsZero() {
				at = a.FinishedAt
			}
			steps = append(steps, item{when: operate.Moment{At: at, Started: a.StartedAt, Finished: a.Outcome != domain.OutcomeRunning}, event: "step", v: ev})
		}
		for _, e := range events {
			if e.ID <= lastEvent {
				continue
			}
			lastEvent = e.ID
			transitions = append(transitions, item{when: operate.Moment{At: e.At, From: string(e.From), To: string(e.To)}, id: "t" + strconv.FormatInt(e.ID, 10), event: "transition",
				v: operate.EventView{From: string(e.From), To: string(e.To), Reason: e.Reason, Actor: e.Actor, At: e.At.UTC()}})
		}
		news := operate.InCausalOrder(transitions, steps, func(n item) operate.Moment { return n.when })
		for _, n := range news {
			send(w, n.id, n.event, n.v)
		}
		wrote := len(news) > 0
		if latest.State == domain.StateSucceeded || latest.State == domain.StateFailedPermanent {
			send(w, "", "end", map[string]any{"id": latest.ID, "state": latest.State})
			flusher.Flush()
			return
		}
		if !wrote && time.Since(lastWrite) > 15*time.Second {
			fmt.Fprint(w, ": keep-alive\n\n") // proxies drop idle streams
			wrote = true
		}
		if wrote {
			flusher.Flush()
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
		}
	}
}

type item struct {
	when      operate.Moment
	id, event string
	v         any
}

func send(w http.ResponseWriter, id, event string, v any) {
	data, _ := json.Marshal(v)
	if id != "" {
		fmt.Fprintf(w, "id: %s\n", id)
	}
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
}

// listPollFactor slows the runs list's stream against a run's: each look reads up to 100
// runs, and a list a second late is still live.
const listPollFactor = 5

// listEvents streams changes to the runs list a filter selects (the dashboard's list page):
// a "runs" event whenever a run enters or leaves the list or changes state, carrying the
// list's new version. The client passes the version it shows as ?v=, so a change made just
// before the stream started is sent at once. Streams share the bound of run streams.
func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, err := runsFilter(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	flusher, release, ok := s.openStream(w, r)
	if !ok {
		return
	}
	defer release()
	version := r.URL.Query().Get("v")
	tick := time.NewTicker(s.cfg.EventPoll * listPollFactor)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		runs, err := s.cfg.Ops.List(ctx, f)
		if err != nil {
			return
		}
		wrote := false
		if v := listVersion(runs); v != version {
			version = v
			send(w, "", "runs", map[string]any{"version": v, "count": len(runs)})
			wrote = true
		} else if time.Since(lastWrite) > 15*time.Second {
			fmt.Fprint(w, ": keep-alive\n\n") // proxies drop idle streams
			wrote = true
		}
		if wrote {
			flusher.Flush()
			lastWrite = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			return
		case <-tick.C:
		}
	}
}

// openStream takes one of the server's event-stream places and starts an event-stream response.
// When it cannot (every place taken, or a writer that cannot flush) it has answered the request
// with a problem and returns ok=false; otherwise release gives the place back.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request) (flusher http.Flusher, release func(), ok bool) {
	select {
	case s.streams <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "5")
		s.problem(w, r, http.StatusServiceUnavailable, "too-many-streams", fmt.Sprintf("%d event streams are open, the most this server keeps; retry later", cap(s.streams)), nil)
		return nil, nil, false
	}
	release = func() { <-s.streams }
	if flusher, ok = w.(http.Flusher); !ok {
		release()
		s.problem(w, r, http.StatusInternalServerError, "internal", "streaming is not supported here", nil)
		return nil, nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()
	return flusher, release, true
}
