package engine_test

import (
	"context"
	"sync"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// startingObserver also hears of attempts as they start (engine.AttemptStarter), as the
// progress display of `pipectl run` does.
type startingObserver struct {
	recordingObserver
	mu      sync.Mutex
	started int
}

func (o *startingObserver) AttemptStarted(string, *domain.Step, *domain.Attempt) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started++
}

// TestFinishTellsOfUnitsThatRanAtOnce: a held run whose pure units run in parallel (for_each
// with max_parallel) keeps the news of each attempt that started, from the units' own
// goroutines: none is lost, and -race finds nothing (found by a review: it appended without
// a lock).
func TestFinishTellsOfUnitsThatRanAtOnce(t *testing.T) {
	b := setup(t)
	obs := &startingObserver{}
	b.eng.Observer = obs
	p := b.pipeline(t, header+`
limits: {max_parallel: 8}
steps:
  - id: fan
    type: transform
    for_each: "${{ [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16] }}"
    max_parallel: 8
    output: "${{ item * 2 }}"
`)
	for range 20 {
		res, err := b.eng.Submit(context.Background(), p, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		run := *res.Run
		run.Unstarted = true
		obs.started = 0
		f := b.eng.Finish(context.Background(), p, &run, map[string]any{}, engine.RunOptions{})
		if f == nil {
			t.Fatal("not finished")
		}
		f.Committed()
		if obs.started != 16 {
			t.Fatalf("told of %d attempts starting, want 16", obs.started)
		}
	}
}
