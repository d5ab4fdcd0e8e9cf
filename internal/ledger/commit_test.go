package ledger

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestCommitAttempts writes deferred attempts with an intent or a transition in one commit,
// on both ledgers, and checks that a writer without the lease writes nothing and gets its
// attempts back unchanged, so that the same attempts can be committed again.
func TestCommitAttempts(t *testing.T) {
	cases := []struct {
		name     string
		owner    string // who commits; the run is held by "a"
		start    bool
		change   bool
		wantErr  error
		wantRows []string
		state    domain.RunState
	}{
		{name: "with a side effect's intent", owner: "a", start: true, wantRows: []string{"x:succeeded", "y:succeeded", "z:running"}, state: domain.StateProcessing},
		{name: "with the run's end", owner: "a", change: true, wantRows: []string{"x:succeeded", "y:succeeded"}, state: domain.StateSucceeded},
		{name: "alone", owner: "a", wantRows: []string{"x:succeeded", "y:succeeded"}, state: domain.StateProcessing},
		{name: "lease lost, with an intent", owner: "gone", start: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
		{name: "lease lost, with the run's end", owner: "gone", change: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, s *Store) {
				ctx := context.Background()
				r := newRun(t, "p", "commit")
				if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "a", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
					t.Fatal(err)
				}
				att := func(step, outcome string) *domain.Attempt {
					return &domain.Attempt{RunID: r.ID, StepID: step, ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k-" + step,
						StartedAt: time.Now(), FinishedAt: time.Now(), Outcome: outcome, Output: []byte(`"` + step + `"`)}
				}
				done := []*domain.Attempt{att("x", domain.OutcomeSucceeded), att("y", domain.OutcomeSucceeded)}
				var start *domain.Attempt
				if tc.start {
					start = att("z", domain.OutcomeRunning)
				}
				var ch *domain.Change
				if tc.change {
					ch = &domain.Change{To: domain.StateSucceeded, Owner: tc.owner, Actor: tc.owner, Reason: "all steps completed"}
				}
				err := s.CommitAttempts(ctx, tc.owner, done, start, ch)
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				rows, _ := s.Attempts(ctx, r.ID)
				var got []string
				for _, a := range rows {
					got = append(got, a.StepID+":"+a.Outcome)
				}
				if len(got) != len(tc.wantRows) {
					t.Fatalf("rows %v, want %v", got, tc.wantRows)
				}
				for i := range got {
					if got[i] != tc.wantRows[i] {
						t.Fatalf("rows %v, want %v", got, tc.wantRows)
					}
				}
				if err != nil {
					for _, a := range append(done, start) {
						if a != nil && a.ID != 0 {
							t.Fatalf("attempt %s kept the ID %d of a write that did not happen", a.StepID, a.ID)
						}
					}
				} else if start != nil && start.ID != rows[2].ID {
					t.Fatalf("intent ID %d, row %d", start.ID, rows[2].ID)
				}
				if run, _ := s.GetRun(ctx, r.ID); run.State != tc.state {
					t.Fatalf("state %s, want %s", run.State, tc.state)
				}
			})
		})
	}
}
