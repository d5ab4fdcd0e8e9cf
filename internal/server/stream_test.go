package server_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/server"
)

type sse struct {
	id, event, data string
}

// readEvents parses a Server-Sent Events stream onto a channel until it ends.
func readEvents(t *testing.T, resp *http.Response) <-chan sse {
	out := make(chan sse, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" {
					out <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				cur.data = line[6:]
			}
		}
	}()
	return out
}

func (b *bundle) stream(id string, lastEvent string) *http.Response {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.url+"/api/v1/runs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+b.tokens[server.RoleViewer])
	if lastEvent != "" {
		req.Header.Set("Last-Event-ID", lastEvent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b.t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// waitFor reads events until one satisfies ok, and returns what it read.
func waitFor(t *testing.T, events <-chan sse, ok func(sse) bool) []sse {
	t.Helper()
	var got []sse
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, open := <-events:
			if !open {
				t.Fatalf("stream ended; read %+v", got)
			}
			got = append(got, e)
			if ok(e) {
				return got
			}
		case <-timeout:
			t.Fatalf("no such event; read %+v", got)
		}
	}
}

// A client follows a run live while a worker executes it: the stream carries every transition
// and step as it happens, through a pause for review, and ends when the run does.
func TestEventsFollowARunningRun(t *testing.T) {
	for name, dsn := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			b := setup(t, dsn(t), options{workers: true})
			r := b.submit("live", 30)
			events := readEvents(t, b.stream(r.ID, ""))
			seen := waitFor(t, events, func(e sse) bool { return e.event == "transition" && strings.Contains(e.data, `"to":"needs_review"`) })
			var steps, transitions int
			for _, e := range seen {
				switch e.event {
				case "step":
					steps++
				case "transition":
					transitions++
					if !strings.HasPrefix(e.id, "t") {
						t.Fatalf("transition without id: %+v", e)
					}
				}
			}
			if transitions != 3 || steps < 1 {
				t.Fatalf("before the review: %+v", seen)
			}
			// A second client that already saw the first two transitions gets only the rest.
			resumed := readEvents(t, b.stream(r.ID, seen[1].id))
			first := waitFor(t, resumed, func(e sse) bool { return e.event == "transition" })
			if !strings.Contains(first[len(first)-1].data, `"to":"needs_review"`) {
				t.Fatalf("resumed stream began with %+v", first)
			}
			doc, _, _ := b.ops.Show(t.Context(), r.ID)
			var held struct {
				Hash string `json:"proposal_hash"`
			}
			json.Unmarshal(doc.Attempts[len(doc.Attempts)-1].Output, &held)
			if code, body := b.do("POST", "/api/v1/runs/"+r.ID+"/review", server.RoleReviewer, `{"decision": "approve", "proposal_hash": "`+held.Hash+`"}`); code != 200 {
				t.Fatalf("approve: %d %s", code, body)
			}
			rest := waitFor(t, events, func(e sse) bool { return e.event == "end" })
			joined := ""
			for _, e := range rest {
				joined += e.event + " " + e.data + "\n"
			}
			for _, want := range []string{`"actor":"reviewer-1"`, `"to":"succeeded"`, `"step":"done","attempt":1,"outcome":"succeeded"`, `end {"id":"` + r.ID + `","state":"succeeded"}`} {
				if !strings.Contains(joined, want) {
					t.Errorf("after approval, no %s in\n%s", want, joined)
				}
			}
			if _, open := <-events; open {
				t.Fatal("the stream stayed open after the end event")
			}
			b.waitState(r.ID, domain.StateSucceeded)
		})
	}
}

func TestEventsOfAMissingRun(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{})
	if code, body := b.do("GET", "/api/v1/runs/nosuch/events", server.RoleViewer, ""); code != 404 || !strings.Contains(string(body), "no run nosuch") {
		t.Fatalf("%d %s", code, body)
	}
}

// Shutting the server down ends open streams, so that a graceful shutdown does not wait on
// them.
func TestStopEndsStreams(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{})
	r := b.submit("held", 1) // queued, no worker: the stream would stay open
	events := readEvents(t, b.stream(r.ID, ""))
	waitFor(t, events, func(e sse) bool { return e.event == "transition" })
	b.srv.Stop()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, open := <-events:
			if !open {
				return
			}
		case <-timeout:
			t.Fatal("the stream outlived Stop")
		}
	}
}

// Streams are bounded: each polls the ledger, so an unbounded number would be a way to load it.
func TestStreamsAreBounded(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{cfg: func(c *server.Config) { c.MaxStreams = 2 }})
	r := b.submit("held", 1)
	b.stream(r.ID, "")
	b.stream(r.ID, "")
	code, body := b.do("GET", "/api/v1/runs/"+r.ID+"/events", server.RoleViewer, "")
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "2 event streams are open") {
		t.Fatalf("third stream: %d %s", code, body)
	}
}

// A client that sends its body too slowly is cut off rather than holding a connection.
func TestSlowBodyIsCut(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{cfg: func(c *server.Config) { c.BodyTimeout = 200 * time.Millisecond }})
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"id": "slow",`))
		time.Sleep(2 * time.Second)
		pw.Write([]byte(` "qty": 1}`))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", b.url+"/api/v1/pipelines/orders/runs", pr)
	req.Header.Set("Authorization", "Bearer "+b.tokens[server.RoleOperator])
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("a trickled body was accepted: %d", resp.StatusCode)
		}
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("the server waited %s for the body", time.Since(start))
	}
}
