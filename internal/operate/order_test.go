package operate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/operate"
)

type entry struct {
	name string
	when operate.Moment
}

// Within one millisecond of the ledger's clock, and across machines whose clocks disagree, a
// run's history must still read in the order it happened. TestEventsFollowARunningRun failed
// on PostgreSQL (3 times in 30) when a step's start sorted before the submit and the claim
// that shared its millisecond, and `runs show` printed a quick run's end before its step; a
// review then found retries and takeovers sharing a millisecond with the next attempt, and a
// submit from a machine whose clock ran ahead.
func TestInCausalOrderOrdersTiesByCause(t *testing.T) {
	ms := func(n int64) time.Time { return time.UnixMilli(1_700_000_000_000 + n) }
	tr := func(name string, at int64, from, to string) entry {
		return entry{name, operate.Moment{At: ms(at), From: from, To: to}}
	}
	// A step as `runs show` lists it: at its start.
	started := func(name string, at int64, finished bool) entry {
		return entry{name, operate.Moment{At: ms(at), Finished: finished}}
	}
	// A step as the event stream sends it once it ended: at its end.
	ended := func(name string, start, end int64) entry {
		return entry{name, operate.Moment{At: ms(end), Started: ms(start), Finished: true}}
	}
	submit := func(at int64) entry { return tr("submit", at, "", "queued") }
	claim := func(at int64) entry { return tr("claim", at, "queued", "processing") }
	cases := []struct {
		name        string
		transitions []entry
		others      []entry
		want        string
	}{
		{"submit, claim and a step's start in one millisecond",
			[]entry{submit(5), claim(5)}, []entry{started("a1", 5, false)}, "submit claim a1"},
		{"a step's end and the end it caused",
			[]entry{submit(1), claim(1), tr("end", 9, "processing", "succeeded")}, []entry{started("a1", 2, true)}, "submit claim a1 end"},
		{"all of a quick run in one millisecond, listed by starts",
			[]entry{submit(3), claim(3), tr("end", 3, "processing", "succeeded")}, []entry{started("a1", 3, true), started("b1", 3, true)}, "submit claim a1 b1 end"},
		{"all of a quick run in one millisecond, streamed by ends",
			[]entry{submit(3), claim(3), tr("end", 3, "processing", "succeeded")}, []entry{ended("a1", 3, 3), ended("b1", 3, 3)}, "submit claim a1 b1 end"},
		{"a retry in one millisecond: the failure before it, the next attempt after its claim",
			[]entry{submit(1), claim(1), tr("retry", 4, "processing", "failed_transient"), tr("retry due", 4, "failed_transient", "processing")},
			[]entry{started("a1", 2, true), started("a2", 4, false)}, "submit claim a1 retry retry due a2"},
		{"a failure, its retry and the next attempt all in one millisecond",
			[]entry{submit(1), claim(1), tr("retry", 4, "processing", "failed_transient"), tr("retry due", 4, "failed_transient", "processing")},
			[]entry{started("a1", 4, true), started("a2", 4, false)}, "submit claim a1 retry retry due a2"},
		{"a retry in one millisecond, streamed",
			[]entry{submit(1), claim(1), tr("retry", 4, "processing", "failed_transient"), tr("retry due", 4, "failed_transient", "processing")},
			[]entry{ended("a1", 2, 4), started("a2", 4, false)}, "submit claim a1 retry retry due a2"},
		{"a takeover: the old owner's attempt before it, the new owner's after",
			[]entry{submit(1), claim(1), tr("takeover", 7, "processing", "processing")},
			[]entry{ended("a1 abandoned", 2, 7), started("a2", 7, false)}, "submit claim a1 abandoned takeover a2"},
		{"a hand-back and the next claim in one millisecond keep the ledger's order",
			[]entry{claim(2), tr("hand back", 4, "processing", "processing"), tr("takeover", 4, "processing", "processing")}, nil, "claim hand back takeover"},
		{"a submit from a machine whose clock runs a second ahead",
			[]entry{submit(1000), claim(5), tr("end", 9, "processing", "succeeded")},
			[]entry{started("a1", 6, true), started("b1", 7, true)}, "submit claim a1 b1 end"},
		{"a submit from a machine whose clock runs behind",
			[]entry{submit(-1000), claim(5), tr("end", 9, "processing", "succeeded")},
			[]entry{started("a1", 6, true)}, "submit claim a1 end"},
		// What the worker wrote keeps its order among the worker's own transitions; a2, dated
		// by the worker's clock against the operator's, cannot be placed by times at all.
		{"an operator on a clock five minutes behind fails the run: the claim and the retry keep their steps",
			[]entry{submit(1), claim(1), tr("retry", 3, "processing", "failed_transient"), tr("retry due", 5, "failed_transient", "processing"), tr("fail", -300_000, "processing", "failed_permanent")},
			[]entry{started("a1", 2, true), started("a2", 6, true)}, "submit claim a1 retry retry due fail a2"},
		{"entries in time order, each after everything earlier",
			[]entry{submit(1), claim(5)}, []entry{started("b", 8, true), started("a", 2, true)}, "submit a claim b"},
		{"ties among the entries keep their order",
			nil, []entry{started("b", 2, true), started("a", 2, true)}, "b a"},
		{"nothing", nil, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, e := range operate.InCausalOrder(c.transitions, c.others, func(e entry) operate.Moment { return e.when }) {
				got = append(got, e.name)
			}
			if strings.Join(got, " ") != c.want {
				t.Fatalf("got %q, want %q", strings.Join(got, " "), c.want)
			}
		})
	}
}
