package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestCommitAttempts writes deferred attempts with an intent or a transition in one commit,
// on both ledgers, and checks that a writer without the lease writes nothing and gets its
// attempts back unchanged, so that the same attempts can be committed again.
// rows names the rows of n committed attempts x0, x1, ..., then more.
func rows(n int, more ...string) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("x%d:succeeded", i))
	}
	return append(out, more...)
}

func TestCommitAttempts(t *testing.T) {
	cases := []struct {
		name     string
		done     int    // finished attempts to commit, x0, x1, ...
		owner    string // who commits; the run is held by "a"
		start    bool
		change   bool
		to       domain.RunState // the transition's state; succeeded when empty
		wantErr  error
		wantRows []string
		state    domain.RunState
	}{
		{name: "with a side effect's intent", done: 2, owner: "a", start: true, wantRows: rows(2, "z:running"), state: domain.StateProcessing},
		{name: "with the run's end", done: 2, owner: "a", change: true, wantRows: rows(2), state: domain.StateSucceeded},
		{name: "alone", done: 2, owner: "a", wantRows: rows(2), state: domain.StateProcessing},
		{name: "one", done: 1, owner: "a", change: true, wantRows: rows(1), state: domain.StateSucceeded},
		{name: "more than one statement holds", done: 33, owner: "a", start: true, wantRows: rows(33, "z:running"), state: domain.StateProcessing},
		{name: "lease lost, with an intent", done: 2, owner: "gone", start: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
		{name: "lease lost, with the run's end", done: 2, owner: "gone", change: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
		{name: "lease lost, many", done: 20, owner: "gone", change: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
		// On PostgreSQL up to maxChained attempts and the transition are one statement; more
		// take a statement each.
		{name: "as many as one statement chains", done: maxChained, owner: "a", change: true, wantRows: rows(maxChained), state: domain.StateSucceeded},
		{name: "one more than one statement chains", done: maxChained + 1, owner: "a", change: true, wantRows: rows(maxChained + 1), state: domain.StateSucceeded},
		{name: "lease lost, chained", done: maxChained, owner: "gone", change: true, wantErr: domain.ErrLeaseLost, state: domain.StateProcessing},
		{name: "dead-lettered", done: 1, owner: "a", change: true, to: domain.StateFailedPermanent, wantRows: rows(1), state: domain.StateFailedPermanent},
		{name: "a transition the state machine forbids", done: 1, owner: "a", change: true, to: "bogus", wantErr: domain.ErrStateConflict, state: domain.StateProcessing},
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
				var done []*domain.Attempt
				for i := range tc.done {
					done = append(done, att(fmt.Sprintf("x%d", i), domain.OutcomeSucceeded))
				}
				var start *domain.Attempt
				if tc.start {
					start = att("z", domain.OutcomeRunning)
				}
				var ch *domain.Change
				if tc.change {
					to := tc.to
					if to == "" {
						to = domain.StateSucceeded
					}
					ch = &domain.Change{To: to, Owner: tc.owner, Actor: tc.owner, Reason: "all steps completed"}
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
				} else {
					// Every attempt knows the ID of its row, and each row holds its own output.
					for i, a := range append(done, start) {
						if a != nil && (a.ID != rows[i].ID || string(rows[i].Output) != `"`+a.StepID+`"`) {
							t.Fatalf("attempt %s has ID %d; row %d is %s with %s", a.StepID, a.ID, rows[i].ID, rows[i].StepID, rows[i].Output)
						}
					}
				}
				if run, _ := s.GetRun(ctx, r.ID); run.State != tc.state {
					t.Fatalf("state %s, want %s", run.State, tc.state)
				}
				// The transition's event is written with it, and only with it.
				events, err := s.Events(ctx, r.ID)
				if err != nil {
					t.Fatal(err)
				}
				last := events[len(events)-1]
				if moved := last.To != domain.StateProcessing; moved != (ch != nil && tc.wantErr == nil) {
					t.Fatalf("last event %+v after a commit with change %v and error %v", last, ch, err)
				}
				if ch != nil && tc.wantErr == nil && (last.From != domain.StateProcessing || last.To != tc.state || last.Actor != tc.owner || last.Reason != ch.Reason) {
					t.Fatalf("event %+v, want processing -> %s by %s", last, tc.state, tc.owner)
				}
			})
		})
	}
}

// TestBatchedAttemptsKeepTheirFields commits attempts with and without error texts, requests,
// responses and outputs in one commit (several insert statements on SQLite) and reads each
// field back as written: an empty text is stored empty (never as NULL), a full one whole.
func TestBatchedAttemptsKeepTheirFields(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "fields")
		if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "a", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		at := time.UnixMilli(1_700_000_000_123)
		var done []*domain.Attempt
		for i := range 13 {
			a := &domain.Attempt{RunID: r.ID, StepID: fmt.Sprintf("s%d", i), ItemIndex: domain.NoItem, Attempt: 1 + i%3,
				StepKey: fmt.Sprintf("k%d", i), StartedAt: at, FinishedAt: at.Add(time.Duration(i) * time.Millisecond),
				DurationMS: int64(i), Outcome: domain.OutcomeSucceeded}
			if i%2 == 1 {
				a.ItemIndex = i
				a.Outcome = domain.OutcomeFailed
				a.ErrorClass, a.Error = domain.ClassPermanent, fmt.Sprintf("error %d", i)
				a.Request, a.Response = []byte(fmt.Sprintf(`{"req":%d}`, i)), []byte(fmt.Sprintf(`{"resp":%d}`, i))
			}
			if i%3 != 0 {
				a.Output = []byte(fmt.Sprintf(`{"out":%d}`, i))
			}
			done = append(done, a)
		}
		if err := s.CommitAttempts(ctx, "a", done, nil, nil); err != nil {
			t.Fatal(err)
		}
		got, err := s.Attempts(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(done) {
			t.Fatalf("%d rows, want %d", len(got), len(done))
		}
		for i, want := range done {
			g := got[i]
			if g.ID != want.ID || g.StepID != want.StepID || g.ItemIndex != want.ItemIndex || g.Attempt != want.Attempt ||
				g.StepKey != want.StepKey || !g.StartedAt.Equal(want.StartedAt) || !g.FinishedAt.Equal(want.FinishedAt) ||
				g.DurationMS != want.DurationMS || g.Outcome != want.Outcome || g.ErrorClass != want.ErrorClass ||
				g.Error != want.Error || string(g.Request) != string(want.Request) || string(g.Response) != string(want.Response) ||
				string(g.Output) != string(want.Output) {
				t.Fatalf("row %d is %+v, want %+v", i, g, *want)
			}
		}
		var nulls int
		if err := s.db.GetContext(ctx, &nulls, s.db.Rebind(`SELECT COUNT(*) FROM step_attempts WHERE run_id = ? AND (error_class IS NULL
			OR error IS NULL OR request IS NULL OR response IS NULL OR output IS NULL OR pipeline <> ?)`), r.ID, r.Pipeline); err != nil {
			t.Fatal(err)
		}
		if nulls != 0 {
			t.Fatalf("%d rows with a NULL text or another pipeline", nulls)
		}
	})
}

func TestChunkSizes(t *testing.T) {
	for n := range 50 {
		sizes := chunkSizes(n)
		sum := 0
		for _, k := range sizes {
			if k < 2 || k > maxBatchRows {
				t.Fatalf("%d attempts: a statement of %d rows in %v", n, k, sizes)
			}
			sum += k
		}
		want := 0
		if n > 1 {
			want = (n + maxBatchRows - 1) / maxBatchRows
		}
		if sum != n && n > 1 || len(sizes) != want {
			t.Fatalf("%d attempts: %v", n, sizes)
		}
	}
}
