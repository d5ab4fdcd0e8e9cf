package operate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/operate"
)

type happening struct {
	name   string
	at     time.Time
	leaves bool
}

// Within one millisecond of the ledger's clock a run's history must still read in the order it
// happened: TestEventsFollowARunningRun failed on PostgreSQL (3 times in 30) when a step's
// start sorted before the submit and the claim that shared its millisecond, and `runs show`
// printed a quick run's end before its step.
func TestInCausalOrderOrdersTiesByCause(t *testing.T) {
	ms := func(n int64) time.Time { return time.UnixMilli(1_700_000_000_000 + n) }
	tr := func(name string, at int64, leaves bool) happening { return happening{name, ms(at), leaves} }
	st := func(name string, at int64) happening { return happening{name: name, at: ms(at)} }
	cases := []struct {
		name        string
		transitions []happening
		others      []happening
		want        string
	}{
		{"submit, claim and a step's start in one millisecond",
			[]happening{tr("t1", 5, false), tr("t2", 5, false)}, []happening{st("a.running", 5)}, "t1 t2 a.running"},
		{"a step's end and the transition it caused",
			[]happening{tr("t2", 1, false), tr("t3", 9, true)}, []happening{st("a.succeeded", 9)}, "t2 a.succeeded t3"},
		{"all of a quick run in one millisecond",
			[]happening{tr("t1", 3, false), tr("t2", 3, false), tr("t3", 3, true)}, []happening{st("a", 3), st("b", 3)}, "t1 t2 a b t3"},
		{"a hand-back and the next claim in one millisecond keep the ledger's order",
			[]happening{tr("t2", 1, false), tr("t3", 4, true), tr("t4", 4, false)}, nil, "t2 t3 t4"},
		{"transitions keep the ledger's order whatever their clocks say",
			[]happening{tr("t1", 9, false), tr("t2", 7, false)}, nil, "t1 t2"},
		{"the rest in time order, each after everything earlier",
			[]happening{tr("t1", 1, false), tr("t2", 5, false)}, []happening{st("b", 8), st("a", 2)}, "t1 a t2 b"},
		{"ties among the rest keep their order",
			nil, []happening{st("b", 2), st("a", 2)}, "b a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, h := range operate.InCausalOrder(c.transitions, c.others, func(h happening) time.Time { return h.at }, func(h happening) bool { return h.leaves }) {
				got = append(got, h.name)
			}
			if strings.Join(got, " ") != c.want {
				t.Fatalf("got %q, want %q", strings.Join(got, " "), c.want)
			}
		})
	}
}
