package engine_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// recordingObserver lists what it hears, in order.
type recordingObserver struct {
	mu   sync.Mutex
	news []string
}

func (o *recordingObserver) AttemptFinished(_ string, step *domain.Step, att *domain.Attempt) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.news = append(o.news, step.ID+":"+att.Outcome)
}

func (o *recordingObserver) RunChanged(_ string, to domain.RunState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.news = append(o.news, "run:"+string(to))
}

func (o *recordingObserver) heard() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.news)
}

// TestFinishHoldsEveryWrite runs queued runs as a claim that holds them would (Finish): a run
// of pure steps comes back with the attempts and the transition a run executed the usual way
// writes (TestPureStepsShareCommits's shapes), having written nothing itself; nothing is told
// of it (log lines, metrics) until its claim says it committed. A run that is not fresh, or has
// a step that is not pure, is left to the claim.
func TestFinishHoldsEveryWrite(t *testing.T) {
	cases := []struct {
		name  string
		steps string
		state domain.RunState
		shape []string // nil: not finished by the claim
	}{
		{"pure steps", `
  - {id: a, type: transform, output: "${{ inputs.n * 2 }}"}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}`,
			domain.StateSucceeded, []string{"a#1:succeeded", "b#1:succeeded"}},
		{"skips, for_each items and their list", `
  - {id: skipped, type: transform, if: "${{ false }}", output: 1}
  - {id: fan, type: transform, needs: [], for_each: "${{ [1, 2, 3] }}", output: "${{ item * 2 }}"}
  - {id: join, type: transform, needs: [fan, skipped], output: "${{ steps.fan.output.size() }}"}`,
			domain.StateSucceeded, []string{"skipped#1:skipped", "fan[0]#1:succeeded", "fan[1]#1:succeeded", "fan[2]#1:succeeded", "fan#0:succeeded", "join#1:succeeded"}},
		{"a gate that rejects", `
  - {id: a, type: transform, output: {n: "${{ inputs.n }}"}}
  - {id: g, type: gate, input: "${{ steps.a.output }}", schema: {type: object, properties: {n: {type: string}}}}`,
			domain.StateFailedPermanent, []string{"a#1:succeeded", "g#1:failed"}},
		{"a failing pure step", `
  - {id: a, type: transform, output: "${{ inputs.n / 0 }}"}`,
			domain.StateFailedPermanent, []string{"a#1:failed"}},
		{"a side effect", `
  - {id: a, type: transform, output: "${{ inputs.n }}"}
  - {id: h, type: exec, command: ["true"]}`,
			domain.StateQueued, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := withGate(setup(t))
			obs := &recordingObserver{}
			b.eng.Observer = obs
			p := b.pipeline(t, header+"inputs: {type: object, properties: {n: {type: integer}}}\nsteps:"+tc.steps+"\n")
			res, err := b.eng.Submit(context.Background(), p, map[string]any{"n": int64(20)})
			if err != nil {
				t.Fatal(err)
			}
			run := *res.Run
			run.Unstarted = true // as the claim that holds it says
			commits := b.store.commits.Load()
			f := b.eng.Finish(context.Background(), p, &run, map[string]any{"n": int64(20)}, engine.RunOptions{})
			if got := b.store.commits.Load(); got != commits {
				t.Fatalf("Finish wrote %d times to the ledger", got-commits)
			}
			if stored, _ := b.store.GetRun(context.Background(), run.ID); stored.State != domain.StateQueued || len(b.attempts(t, run.ID)) != 0 {
				t.Fatalf("after Finish the ledger has the run %s with %d attempts", stored.State, len(b.attempts(t, run.ID)))
			}
			if tc.shape == nil {
				if f != nil {
					t.Fatalf("finished a run that is not pure: %+v", f.Change)
				}
				return
			}
			if f == nil {
				t.Fatal("a run of pure steps was not finished")
			}
			atts := make([]domain.Attempt, len(f.Attempts))
			for i, a := range f.Attempts {
				atts[i] = *a
			}
			if got := shape(atts); !slices.Equal(got, tc.shape) || f.Change.To != tc.state || f.Run.State != tc.state {
				t.Fatalf("finished as %s (run %s) with %v, want %s with %v", f.Change.To, f.Run.State, got, tc.state, tc.shape)
			}
			if heard := obs.heard(); len(heard) != 0 || strings.Contains(b.logs.String(), "step attempt") {
				t.Fatalf("told before the claim committed: %v / %s", heard, b.logs.String())
			}
			f.Committed()
			// Every attempt but a for_each's collected list (attempt 0), then the run's end.
			told := 1
			for _, a := range atts {
				if a.Attempt > 0 {
					told++
				}
			}
			if heard := obs.heard(); len(heard) != told || heard[len(heard)-1] != "run:"+string(tc.state) {
				t.Fatalf("told after the commit: %v", heard)
			}
			if strings.Count(b.logs.String(), `"msg":"step attempt"`) < 1 {
				t.Fatalf("no attempt was logged after the commit: %s", b.logs.String())
			}
			// A run that is not fresh (its history must be read) is left to the claim.
			run.Unstarted = false
			if f := b.eng.Finish(context.Background(), p, &run, map[string]any{"n": int64(20)}, engine.RunOptions{}); f != nil {
				t.Fatal("finished a run that was not fresh")
			}
		})
	}
}

// TestFinishStopsWhenItsClaimsBudgetIsSpent: a held run whose claim ran out of time stops
// between two steps and is left to the claim (it starts over in a slot); nothing of what it
// did is told.
func TestFinishStopsWhenItsClaimsBudgetIsSpent(t *testing.T) {
	b := setup(t)
	obs := &recordingObserver{}
	b.eng.Observer = obs
	p := b.pipeline(t, header+`
steps:
  - {id: a, type: transform, output: 1}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}
`)
	res, err := b.eng.Submit(context.Background(), p, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	run := *res.Run
	run.Unstarted = true
	spent, cancel := context.WithCancel(context.Background())
	cancel()
	if f := b.eng.Finish(spent, p, &run, map[string]any{}, engine.RunOptions{}); f != nil {
		t.Fatalf("a run past its claim's budget was finished: %+v", f.Change)
	}
	if heard := obs.heard(); len(heard) != 0 {
		t.Fatalf("told of a run left to the claim: %v", heard)
	}
}
