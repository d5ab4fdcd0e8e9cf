package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/operate"
)

// A quick run's submit, claim, step and end can share a millisecond of the ledger's clock
// (seen on PostgreSQL): `runs show` must still print the step before the end it caused, and
// the claim before the step.
func TestTimelineOfAQuickRunReadsInOrder(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	doc := operate.RunDoc{
		Events: []operate.EventView{
			{From: "", To: "queued", Actor: "cli", At: at},
			{From: "queued", To: "processing", Actor: "w1", Reason: "claimed by w1", At: at},
			{From: "processing", To: "succeeded", Actor: "w1", At: at},
		},
		Attempts: []operate.AttemptView{{Step: "only", Attempt: 1, Outcome: "succeeded", StartedAt: at}},
		Notes:    []operate.NoteView{{Actor: "ops", Text: "later", At: at.Add(time.Second)}},
	}
	var got []string
	for _, l := range timeline(doc) {
		got = append(got, strings.Fields(l.text)[0]+" "+strings.Fields(l.text)[1]+" "+strings.Fields(l.text)[2])
	}
	want := []string{"- -> queued", "queued -> processing", "step only #1", "processing -> succeeded", "note by ops"}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("timeline:\n got %q\nwant %q", got, want)
	}
}

// `runs show --follow` prints each line of the timeline once, as it appears, and equal lines
// (two equal gate reasons) as often as `runs show` does: they were printed once.
func TestFollowPrintsEachLineOnce(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	a, b, c := line{text: "reason", when: operate.Moment{At: at}}, line{text: "step", when: operate.Moment{At: at}}, line{text: "end", when: operate.Moment{At: at.Add(time.Second)}}
	printed := map[line]int{}
	for i, poll := range []struct{ timeline, want []line }{
		{[]line{b, a, a}, []line{b, a, a}},
		{[]line{b, a, a}, nil},
		{[]line{b, a, a, c}, []line{c}},
		{[]line{b, a, a, a, c}, []line{a}},
	} {
		got := unprinted(printed, poll.timeline)
		if len(got) != len(poll.want) {
			t.Fatalf("poll %d printed %v, want %v", i, got, poll.want)
		}
		for j := range got {
			if got[j] != poll.want[j] {
				t.Fatalf("poll %d printed %v, want %v", i, got, poll.want)
			}
		}
	}
}
