package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/steps"
)

// withGate adds the gate step type to a test bundle.
func withGate(b *bundle) *bundle {
	b.eng.Steps[domain.StepGate] = steps.Gate{Gates: &steps.Gates{}}
	return b
}

// shape lists a run's attempts as step[item]#attempt:outcome, in ledger order.
func shape(as []domain.Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		item := ""
		if a.ItemIndex != domain.NoItem {
			item = fmt.Sprintf("[%d]", a.ItemIndex)
		}
		out[i] = fmt.Sprintf("%s%s#%d:%s", a.StepID, item, a.Attempt, a.Outcome)
	}
	return out
}

// TestPureStepsShareCommits counts the commits of pipelines of every shape: the attempts of
// pure steps (transform, gate, skips, a for_each's collected list) wait for the next commit
// that must be durable, and the ledger holds the same rows as when each had its own.
func TestPureStepsShareCommits(t *testing.T) {
	cases := []struct {
		name    string
		steps   string
		state   domain.RunState
		commits int64
		shape   []string
	}{
		{
			name: "pure steps go with the run's completion",
			steps: `
  - {id: a, type: transform, output: "${{ inputs.n * 2 }}"}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}
  - {id: c, type: transform, output: "${{ steps.b.output + 1 }}"}`,
			state: domain.StateSucceeded, commits: 2,
			shape: []string{"a#1:succeeded", "b#1:succeeded", "c#1:succeeded"},
		},
		{
			name: "skips, for_each items and their list",
			steps: `
  - {id: skipped, type: transform, if: "${{ false }}", output: 1}
  - {id: fan, type: transform, needs: [], for_each: "${{ [1, 2, 3] }}", output: "${{ item * 2 }}"}
  - {id: join, type: transform, needs: [fan, skipped], output: "${{ steps.fan.output.size() }}"}`,
			state: domain.StateSucceeded, commits: 2,
			shape: []string{"skipped#1:skipped", "fan[0]#1:succeeded", "fan[1]#1:succeeded", "fan[2]#1:succeeded", "fan#0:succeeded", "join#1:succeeded"},
		},
		{
			name: "a gate that passes",
			steps: `
  - {id: a, type: transform, output: {n: "${{ inputs.n }}"}}
  - {id: g, type: gate, input: "${{ steps.a.output }}", schema: {type: object, required: [n], properties: {n: {type: integer}}}}
  - {id: c, type: transform, output: "${{ steps.g.output.n }}"}`,
			state: domain.StateSucceeded, commits: 2,
			shape: []string{"a#1:succeeded", "g#1:succeeded", "c#1:succeeded"},
		},
		{
			name: "pure steps go with the intent of a side effect",
			steps: `
  - {id: a, type: transform, output: "${{ inputs.n * 2 }}"}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}
  - {id: h, type: http, method: POST, url: "TARGET/things", body: {b: "${{ steps.b.output }}"}}
  - {id: c, type: transform, output: "${{ steps.h.output.status }}"}`,
			// create; a, b and h's intent; h's result; c and the completion
			state: domain.StateSucceeded, commits: 4,
			shape: []string{"a#1:succeeded", "b#1:succeeded", "h#1:succeeded", "c#1:succeeded"},
		},
		{
			name: "a read goes with the pure steps before it",
			steps: `
  - {id: a, type: transform, output: "${{ inputs.n }}"}
  - {id: r, type: http, url: "TARGET/state"}
  - {id: c, type: transform, output: "${{ steps.r.output.status }}"}`,
			state: domain.StateSucceeded, commits: 3,
			shape: []string{"a#1:succeeded", "r#1:succeeded", "c#1:succeeded"},
		},
		{
			name: "a failing pure step dead-letters with the attempts before it",
			steps: `
  - {id: a, type: transform, output: "${{ inputs.n }}"}
  - {id: b, type: transform, output: "${{ steps.a.output / 0 }}"}
  - {id: c, type: transform, output: 1}`,
			state: domain.StateFailedPermanent, commits: 2,
			shape: []string{"a#1:succeeded", "b#1:failed"},
		},
		{
			name: "a gate that rejects",
			steps: `
  - {id: a, type: transform, output: {n: "${{ inputs.n }}"}}
  - {id: g, type: gate, input: "${{ steps.a.output }}", schema: {type: object, properties: {n: {type: string}}}}`,
			state: domain.StateFailedPermanent, commits: 2,
			shape: []string{"a#1:succeeded", "g#1:failed"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := withGate(setup(t))
			tg := newTarget(t)
			p := b.pipeline(t, header+"inputs: {type: object, properties: {n: {type: integer}}}\nsteps:"+strings.ReplaceAll(tc.steps, "TARGET", tg.URL)+"\n")
			res := b.run(t, p, map[string]any{"n": int64(20)}, engine.RunOptions{})
			if res.Run.State != tc.state {
				t.Fatalf("state %s, want %s (%s)", res.Run.State, tc.state, res.Run.Error)
			}
			if got := shape(b.attempts(t, res.Run.ID)); !slices.Equal(got, tc.shape) {
				t.Fatalf("attempts\n got %v\nwant %v", got, tc.shape)
			}
			if got := b.store.commits.Load(); got != tc.commits {
				t.Fatalf("commits = %d, want %d", got, tc.commits)
			}
		})
	}
}

// TestPureAttemptsAreDurableBeforeTheSideEffect has the target of a POST read the ledger when
// the request arrives: the pure steps before it and its intent must be there already.
func TestPureAttemptsAreDurableBeforeTheSideEffect(t *testing.T) {
	cases := []struct {
		name string
		kind string
		want []string
	}{
		{"one write", "POST", []string{"a#1:succeeded", "b#1:succeeded", "h#1:running"}},
		{"a read does not need it", "GET", []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			tg := newTarget(t)
			var seen []domain.Attempt
			var readErr error
			tg.script = []func(w http.ResponseWriter, r *http.Request) bool{func(w http.ResponseWriter, r *http.Request) bool {
				seen, readErr = b.store.Attempts(r.Context(), r.URL.Query().Get("run"))
				return false
			}}
			p := b.pipeline(t, header+`
steps:
  - {id: a, type: transform, output: "${{ run.id }}"}
  - {id: b, type: transform, output: "${{ steps.a.output + '!' }}"}
  - {id: h, type: http, method: `+tc.kind+`, url: "`+tg.URL+`/things", query: {run: "${{ run.id }}"}}
  - {id: c, type: transform, output: "${{ steps.h.output.status }}"}
`)
			res := b.run(t, p, map[string]any{}, engine.RunOptions{})
			if res.Run.State != domain.StateSucceeded || readErr != nil || tg.total.Load() != 1 {
				t.Fatalf("state %s, read %v, requests %d", res.Run.State, readErr, tg.total.Load())
			}
			if got := shape(seen); !slices.Equal(got, tc.want) {
				t.Fatalf("the ledger when the request arrived\n got %v\nwant %v", got, tc.want)
			}
			if tc.kind == "POST" && string(seen[1].Output) != `"`+res.Run.ID+`!"` {
				t.Fatalf("b's output was %s", seen[1].Output)
			}
		})
	}
}

// stealingStore hands the run to another owner just before the engine's first combined
// commit, as a takeover by a process that thought this one dead would.
type stealingStore struct {
	*countingStore
	calls atomic.Int64
}

func (s *stealingStore) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	if s.calls.Add(1) == 1 {
		if err := s.Store.TakeOver(ctx, done[0].RunID, owner, "thief:1:1", time.Now().Add(time.Minute), "test takeover", "thief"); err != nil {
			return err
		}
	}
	return s.countingStore.CommitAttempts(ctx, owner, done, start, ch)
}

// TestLostLeaseRefusesDeferredAttempts: the deferred attempts are fenced like any write; when
// the lease is gone nothing of them is written and no side effect happens.
func TestLostLeaseRefusesDeferredAttempts(t *testing.T) {
	cases := []struct {
		name  string
		steps string
	}{
		{"before a side effect", `
  - {id: a, type: transform, output: 1}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}
  - {id: h, type: http, method: POST, url: "TARGET/things"}`},
		{"at the end of the run", `
  - {id: a, type: transform, output: 1}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			tg := newTarget(t)
			stealing := &stealingStore{countingStore: b.store}
			b.eng.Store = stealing
			p := b.pipeline(t, header+"steps:"+strings.ReplaceAll(tc.steps, "TARGET", tg.URL)+"\n")
			res, err := b.eng.Run(context.Background(), p, map[string]any{}, engine.RunOptions{})
			if !errors.Is(err, domain.ErrLeaseLost) {
				t.Fatalf("err = %v, want a lost lease", err)
			}
			if stealing.calls.Load() == 0 {
				t.Fatal("no combined commit was attempted")
			}
			if as := b.attempts(t, res.Run.ID); len(as) != 0 {
				t.Fatalf("attempts written after the lease was lost: %v", shape(as))
			}
			if tg.total.Load() != 0 {
				t.Fatal("the side effect happened without the lease")
			}
			got, err := b.store.GetRun(context.Background(), res.Run.ID)
			if err != nil || got.State != domain.StateProcessing || got.LeaseOwner != "thief:1:1" {
				t.Fatalf("run %+v %v", got, err)
			}
		})
	}
}

var errCrashed = errors.New("the process died")

// crashingStore is the ledger as seen by a process that dies: once dead, nothing it would
// write reaches the ledger.
type crashingStore struct {
	engine.Store
	dead atomic.Bool
}

func (c *crashingStore) check() error {
	if c.dead.Load() {
		return errCrashed
	}
	return nil
}

func (c *crashingStore) Transition(ctx context.Context, id string, ch domain.Change) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.Transition(ctx, id, ch)
}

func (c *crashingStore) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.RenewLease(ctx, id, owner, until)
}

func (c *crashingStore) ReleaseLease(ctx context.Context, id, owner string) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.ReleaseLease(ctx, id, owner)
}

func (c *crashingStore) StartAttempt(ctx context.Context, owner string, a *domain.Attempt) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.StartAttempt(ctx, owner, a)
}

func (c *crashingStore) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.FinishAttempt(ctx, owner, a, ch)
}

func (c *crashingStore) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.CommitAttempts(ctx, owner, done, start, ch)
}

// countingTransform counts the executions of each transform step. before, when set, is told
// of each execution first and says whether the process died then: a dead process computes
// nothing more, so that step and every later one end there.
type countingTransform struct {
	mu     sync.Mutex
	runs   map[string]int
	dead   bool
	before func(step string) (died bool)
}

func (c *countingTransform) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return domain.StepResult{}, errCrashed
	}
	c.runs[call.Step.ID]++
	if c.before != nil && c.before(call.Step.ID) {
		c.dead = true
		c.mu.Unlock()
		return domain.StepResult{}, errCrashed
	}
	c.mu.Unlock()
	return steps.Transform{}.Execute(ctx, call)
}

const crashSpec = `
inputs: {type: object, properties: {n: {type: integer}}}
steps:
  - {id: a, type: transform, output: "${{ inputs.n * 2 }}"}
  - {id: b, type: transform, output: "${{ steps.a.output + 1 }}"}
  - {id: h, type: http, method: POST, url: "TARGET/things", body: {b: "${{ steps.b.output }}"}}
  - {id: c, type: transform, output: "${{ steps.b.output * 10 }}"}
  - {id: d, type: transform, output: "c=${{ steps.c.output }} status=${{ steps.h.output.status }}"}
`

// TestKilledBetweenPureStepsResumes kills the process (its ledger writes stop) as a pure step
// runs, then resumes the run from another process: the pure steps whose attempts were not yet
// committed are computed again, the side effect is not repeated, and the ledger reads as if
// nothing had happened.
func TestKilledBetweenPureStepsResumes(t *testing.T) {
	cases := []struct {
		crashAt string
		durable []string       // the ledger after the crash
		runs    map[string]int // executions of each transform, both processes together
	}{
		{"b", []string{}, map[string]int{"a": 2, "b": 2, "c": 1, "d": 1}},
		{"c", []string{"a#1:succeeded", "b#1:succeeded", "h#1:succeeded"}, map[string]int{"a": 1, "b": 1, "c": 2, "d": 1}},
		{"d", []string{"a#1:succeeded", "b#1:succeeded", "h#1:succeeded"}, map[string]int{"a": 1, "b": 1, "c": 2, "d": 2}},
	}
	input := map[string]any{"n": int64(20)}
	// The reference: the same run with no crash.
	ref := setup(t)
	refTarget := newTarget(t)
	refRun := ref.run(t, ref.pipeline(t, header+strings.ReplaceAll(crashSpec, "TARGET", refTarget.URL)), input, engine.RunOptions{})
	want := ref.attempts(t, refRun.Run.ID)

	for _, tc := range cases {
		t.Run("crash at "+tc.crashAt, func(t *testing.T) {
			b := setup(t)
			tg := newTarget(t)
			p := b.pipeline(t, header+strings.ReplaceAll(crashSpec, "TARGET", tg.URL))
			crashing := &crashingStore{Store: b.store}
			counter := &countingTransform{runs: map[string]int{}, before: func(step string) bool {
				if step == tc.crashAt {
					crashing.dead.Store(true)
				}
				return crashing.dead.Load()
			}}
			stepsOf := func() map[domain.StepType]domain.StepExecutor {
				return map[domain.StepType]domain.StepExecutor{domain.StepTransform: counter, domain.StepHTTP: steps.NewHTTP(nil)}
			}
			self := engine.CurrentOwner()
			dying := &engine.Engine{
				Store: crashing, Renderer: b.eng.Renderer, Steps: stepsOf(), Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
				// The same host, a process that no longer exists: the next one may take over.
				Owner: engine.Owner{Host: self.Host, PID: self.PID, Start: "long-gone"}, Actor: "test", Version: "test", LeaseTTL: 5 * time.Second,
			}
			first, err := dying.Run(context.Background(), p, input, engine.RunOptions{})
			if !errors.Is(err, errCrashed) {
				t.Fatalf("the first process ended with %v, not the crash", err)
			}
			if got := shape(b.attempts(t, first.Run.ID)); !slices.Equal(got, tc.durable) {
				t.Fatalf("durable after the crash\n got %v\nwant %v", got, tc.durable)
			}

			counter.before, counter.dead = nil, false
			b.eng.Steps = stepsOf()
			res := b.run(t, p, input, engine.RunOptions{})
			if res.Run.State != domain.StateSucceeded || !res.Resumed {
				t.Fatalf("resumed run: state %s resumed %v (%s)", res.Run.State, res.Resumed, res.Run.Error)
			}
			got := b.attempts(t, res.Run.ID)
			if !slices.Equal(shape(got), shape(want)) {
				t.Fatalf("attempts after the resume\n got %v\nwant %v", shape(got), shape(want))
			}
			for i := range got {
				if got[i].StepID != "h" && string(got[i].Output) != string(want[i].Output) {
					t.Fatalf("%s output %s, want %s", got[i].StepID, got[i].Output, want[i].Output)
				}
				if got[i].StepKey != want[i].StepKey {
					t.Fatalf("%s step key %s, want %s", got[i].StepID, got[i].StepKey, want[i].StepKey)
				}
			}
			if !mapsEqual(counter.runs, tc.runs) {
				t.Fatalf("transform executions %v, want %v", counter.runs, tc.runs)
			}
			if tg.total.Load() != 1 || len(tg.applied) != 1 {
				t.Fatalf("the target saw %d requests, applied %v", tg.total.Load(), tg.applied)
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
