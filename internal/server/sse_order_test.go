package server

import (
	"strings"
	"testing"
	"time"
)

// Within one millisecond of the ledger's clock a stream must still tell what happened in the
// order it did: the TestEventsFollowARunningRun failure on PostgreSQL was a step's start sorted
// before the submit and the claim that shared its millisecond.
func TestByWhenOrdersTiesByCause(t *testing.T) {
	ms := func(n int64) time.Time { return time.UnixMilli(1_700_000_000_000 + n) }
	tr := func(id string, at int64, leaves bool) item {
		return item{at: ms(at), leaves: leaves, id: id, event: "transition"}
	}
	st := func(name string, at int64) item { return item{at: ms(at), event: "step", v: name} }
	cases := []struct {
		name        string
		steps       []item
		transitions []item
		want        string
	}{
		{"submit, claim and a step start in one millisecond",
			[]item{st("a.running", 5)}, []item{tr("t1", 5, false), tr("t2", 5, false)}, "t1 t2 a.running"},
		{"a step's end and the transition it caused",
			[]item{st("a.succeeded", 9)}, []item{tr("t2", 1, false), tr("t3", 9, true)}, "t2 a.succeeded t3"},
		{"all of a quick run in one millisecond",
			[]item{st("a.running", 3), st("a.succeeded", 3)}, []item{tr("t1", 3, false), tr("t2", 3, false), tr("t3", 3, true)}, "t1 t2 a.running a.succeeded t3"},
		{"transitions keep the ledger's order whatever their clocks say",
			nil, []item{tr("t1", 9, false), tr("t2", 7, false)}, "t1 t2"},
		{"steps in time order, after everything earlier",
			[]item{st("b", 8), st("a", 2)}, []item{tr("t1", 1, false), tr("t2", 5, false)}, "t1 a t2 b"},
		{"steps only", []item{st("a", 2)}, nil, "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, n := range byWhen(c.steps, c.transitions) {
				if n.id != "" {
					got = append(got, n.id)
				} else {
					got = append(got, n.v.(string))
				}
			}
			if strings.Join(got, " ") != c.want {
				t.Fatalf("got %q, want %q", strings.Join(got, " "), c.want)
			}
		})
	}
}
