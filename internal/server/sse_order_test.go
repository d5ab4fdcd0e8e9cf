package server

import (
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestNewsOfOneMillisecond: a worker that claims at once creates the run, claims it and starts
// its first step in one millisecond of the ledger, and a fast step ends in the millisecond of
// the transition it causes. The stream must say them in the order they happened, so that a
// client resuming after the claim (Last-Event-ID) is not sent it again.
func TestNewsOfOneMillisecond(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	transition := func(id string, from, to domain.RunState) item {
		return item{at: at, rank: transitionRank(from, to), id: id, event: "transition"}
	}
	step := item{at: at, rank: 1, event: "step"}
	for _, c := range []struct {
		name string
		in   []item
		want string
	}{
		{"created, claimed, first step", []item{step, transition("t1", "", domain.StateQueued), transition("t2", domain.StateQueued, domain.StateProcessing)}, "t1 t2 step"},
		{"a step's end, then the review it asked for", []item{transition("t3", domain.StateProcessing, domain.StateNeedsReview), step}, "step t3"},
		{"resumed after review, next step", []item{step, transition("t4", domain.StateNeedsReview, domain.StateProcessing)}, "t4 step"},
		{"taken over, step", []item{step, transition("t5", domain.StateProcessing, domain.StateProcessing)}, "t5 step"},
	} {
		news := append([]item(nil), c.in...)
		sortNews(news)
		got := ""
		for i, n := range news {
			if i > 0 {
				got += " "
			}
			if n.id != "" {
				got += n.id
			} else {
				got += n.event
			}
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
