package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// noteWrite is a closure that records a note on a run, as every ledger write records rows.
func noteWrite(s *Store, runID, text string) func(*sqlx.Tx) error {
	return func(tx *sqlx.Tx) error {
		_, err := tx.Exec(s.db.Rebind(`INSERT INTO notes (run_id, actor, text, at) VALUES (?, 't', ?, 0)`), runID, text)
		return err
	}
}

func countNotes(t *testing.T, s *Store, text string) int {
	t.Helper()
	var n int
	if err := s.db.Get(&n, s.db.Rebind(`SELECT COUNT(*) FROM notes WHERE text = ?`), text); err != nil {
		t.Fatal(err)
	}
	return n
}

func request(ctx context.Context, fn func(*sqlx.Tx) error) *txRequest {
	return &txRequest{ctx: ctx, fn: fn, result: make(chan error, 1)}
}

// TestGroupCommitRefusalStaysWithItsCaller runs one batch in which a run's owner writes its
// attempt, a process that lost the lease of another run is refused, and a third write follows:
// the refusal reaches only its caller, the others are committed once each, and the refused
// write left nothing.
func TestGroupCommitRefusalStaysWithItsCaller(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		mine, lost := newRun(t, "p", "mine"), newRun(t, "p", "lost")
		for _, r := range []*domain.Run{mine, lost} {
			if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "me", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		force(t, s, lost.ID, domain.StateProcessing, "someone-else")
		att := func(runID string) *domain.Attempt {
			return &domain.Attempt{RunID: runID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeSucceeded}
		}
		good, refused := att(mine.ID), att(lost.ID)
		finish := func(a *domain.Attempt, ch *domain.Change) func(*sqlx.Tx) error {
			return func(tx *sqlx.Tx) error {
				a.ID = 0
				if err := s.checkOwner(ctx, tx, a.RunID, "me"); err != nil {
					return err
				}
				if err := s.insertAttempt(ctx, tx, a); err != nil {
					return err
				}
				if ch != nil {
					return s.transitionTx(ctx, tx, a.RunID, *ch)
				}
				return nil
			}
		}
		batch := []*txRequest{
			request(ctx, finish(good, &domain.Change{To: domain.StateSucceeded, Owner: "me", Actor: "me"})),
			request(ctx, finish(refused, nil)),
			request(ctx, noteWrite(s, mine.ID, "after")),
		}
		s.group.run(batch)
		if err := <-batch[0].result; err != nil {
			t.Fatalf("the owner's write failed with the other run's refusal: %v", err)
		}
		if err := <-batch[1].result; !errors.Is(err, domain.ErrLeaseLost) {
			t.Fatalf("the refused write: %v, want ErrLeaseLost", err)
		}
		if err := <-batch[2].result; err != nil {
			t.Fatal(err)
		}
		if atts, _ := s.Attempts(ctx, mine.ID); len(atts) != 1 || atts[0].ID != good.ID {
			t.Fatalf("attempts of the owner's run: %+v (want exactly one, id %d)", atts, good.ID)
		}
		if atts, _ := s.Attempts(ctx, lost.ID); len(atts) != 0 {
			t.Fatalf("the refused write left %+v", atts)
		}
		if r, _ := s.GetRun(ctx, mine.ID); r.State != domain.StateSucceeded {
			t.Fatalf("the owner's transition: %s", r.State)
		}
		if n := countNotes(t, s, "after"); n != 1 {
			t.Fatalf("the write after the refusal is there %d times", n)
		}
	})
}

// TestGroupCommitAnswersAfterCommit holds the last closure of a batch: while it runs, the
// callers of the earlier ones have no answer and another connection sees none of their rows.
func TestGroupCommitAnswersAfterCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "ack")
		if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
			t.Fatal(err)
		}
		holding, release := make(chan struct{}), make(chan struct{})
		batch := []*txRequest{
			request(ctx, noteWrite(s, r.ID, "first")),
			request(ctx, noteWrite(s, r.ID, "second")),
			request(ctx, func(*sqlx.Tx) error { close(holding); <-release; return nil }),
		}
		done := make(chan struct{})
		go func() { s.group.run(batch); close(done) }()
		<-holding
		for i, req := range batch[:2] {
			select {
			case err := <-req.result:
				t.Fatalf("caller %d was answered (%v) before the commit", i, err)
			default:
			}
		}
		if s.Dialect() == "postgres" {
			// Another connection: a reader must not see the batch before it commits.
			other, err := sqlx.Open("pgx", s.DSN())
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			var n int
			if err := other.Get(&n, `SELECT COUNT(*) FROM notes WHERE text IN ('first', 'second')`); err != nil || n != 0 {
				t.Fatalf("%d rows of the batch visible before its commit (%v)", n, err)
			}
		}
		close(release)
		<-done
		for _, req := range batch {
			if err := <-req.result; err != nil {
				t.Fatal(err)
			}
		}
		if countNotes(t, s, "first") != 1 || countNotes(t, s, "second") != 1 {
			t.Fatal("the batch's rows are missing after its commit")
		}
	})
}

// TestGroupCommitCancellation: a caller that gave up before its batch ran writes nothing and
// gets its context's error, and the others of the batch are not disturbed; a caller that gives
// up while waiting for its turn is answered at once.
func TestGroupCommitCancellation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "cancel")
		if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
			t.Fatal(err)
		}
		gone, cancel := context.WithCancel(ctx)
		cancel()
		batch := []*txRequest{
			request(ctx, noteWrite(s, r.ID, "kept-1")),
			request(gone, noteWrite(s, r.ID, "cancelled")),
			request(ctx, noteWrite(s, r.ID, "kept-2")),
		}
		s.group.run(batch)
		if err := <-batch[1].result; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled caller: %v", err)
		}
		for _, i := range []int{0, 2} {
			if err := <-batch[i].result; err != nil {
				t.Fatal(err)
			}
		}
		if countNotes(t, s, "cancelled") != 0 || countNotes(t, s, "kept-1") != 1 || countNotes(t, s, "kept-2") != 1 {
			t.Fatal("cancellation changed what the batch wrote")
		}

		// The committer is busy with a held write; a caller queued behind it gives up.
		holding, release := make(chan struct{}), make(chan struct{})
		first := make(chan error, 1)
		go func() {
			first <- s.group.submit(ctx, r.ID, func(*sqlx.Tx) error { close(holding); <-release; return nil }, nil)
		}()
		<-holding
		waiting, stop := context.WithCancel(ctx)
		answered := make(chan error, 1)
		go func() { answered <- s.group.submit(waiting, r.ID, noteWrite(s, r.ID, "gave-up"), nil) }()
		stop()
		if err := <-answered; !errors.Is(err, context.Canceled) {
			t.Fatalf("a caller that gave up in the queue: %v", err)
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if countNotes(t, s, "gave-up") != 0 {
			t.Fatal("a write whose caller gave up in the queue was committed")
		}
	})
}

// TestGroupCommitConcurrentWritesAndClose sends many writes at once through the committers,
// then closes the store while more arrive: every write answered without error is in the ledger
// exactly once, and Close returns only after the batches in progress.
func TestGroupCommitConcurrentWritesAndClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "many")
		if _, _, err := s.CreateRun(ctx, r, "t", nil); err != nil {
			t.Fatal(err)
		}
		const writers = 64
		errs := make(chan error, writers)
		for i := range writers {
			go func() { errs <- s.runTx(ctx, fmt.Sprint("run-", i%7), noteWrite(s, r.ID, fmt.Sprint("w", i))) }()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for i := range writers {
			if n := countNotes(t, s, fmt.Sprint("w", i)); n != 1 {
				t.Fatalf("write %d is in the ledger %d times", i, n)
			}
		}

		// Close waits for the write in progress, which commits.
		holding, release := make(chan struct{}), make(chan struct{})
		held := make(chan error, 1)
		go func() {
			held <- s.group.submit(ctx, r.ID, func(tx *sqlx.Tx) error {
				close(holding)
				<-release
				return noteWrite(s, r.ID, "held")(tx)
			}, nil)
		}()
		<-holding
		closed := make(chan struct{})
		go func() { s.group.close(); close(closed) }()
		select {
		case <-closed:
			t.Fatal("close returned while a write was in progress")
		case <-time.After(50 * time.Millisecond):
		}
		close(release)
		<-closed
		if err := <-held; err != nil || countNotes(t, s, "held") != 1 {
			t.Fatalf("the write in progress at close: %v", err)
		}
		// After close, writes commit alone.
		if err := s.runTx(ctx, r.ID, noteWrite(s, r.ID, "late")); err != nil || countNotes(t, s, "late") != 1 {
			t.Fatalf("a write after close: %v", err)
		}
	})
}

// TestPipelinedBatch runs batches of single-statement writes on PostgreSQL, which go in one
// round trip and one implicit transaction: a lost lease in the batch is refused to its caller
// alone while the others commit, and a statement the server rejects rolls the batch back, after
// which each write is made once, alone, by its fn.
func TestPipelinedBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		if s.dialect != "postgres" {
			t.Skip("pipelined batches are PostgreSQL's")
		}
		ctx := context.Background()
		chained := func(runID, owner string) (*txRequest, *domain.Attempt) {
			a := &domain.Attempt{RunID: runID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: time.Now(), Outcome: domain.OutcomeSucceeded}
			ch := domain.Change{To: domain.StateSucceeded, Owner: owner, Actor: owner, Reason: "done"}
			one, err := s.chainedStmt(owner, runID, []*domain.Attempt{a}, ch, true)
			if err != nil {
				t.Fatal(err)
			}
			r := request(ctx, func(tx *sqlx.Tx) error {
				a.ID = 0
				st, err := s.chainedStmt(owner, runID, []*domain.Attempt{a}, ch, false)
				if err != nil {
					return err
				}
				return st.scan(tx.QueryRowContext(ctx, st.query, st.args...))
			})
			r.one = one
			return r, a
		}
		var runs []*domain.Run
		for _, key := range []string{"a", "lost", "b", "c", "d"} {
			r := newRun(t, "p", "pipe-"+key)
			if _, _, err := s.CreateRun(ctx, r, "t", &domain.Claim{Owner: "me", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			runs = append(runs, r)
		}
		force(t, s, runs[1].ID, domain.StateProcessing, "someone-else")
		ra, aa := chained(runs[0].ID, "me")
		rl, al := chained(runs[1].ID, "me")
		rb, ab := chained(runs[2].ID, "me")
		s.group.run([]*txRequest{ra, rl, rb})
		if err := <-rl.result; !errors.Is(err, domain.ErrLeaseLost) {
			t.Fatalf("the write without the lease: %v", err)
		}
		for _, r := range []*txRequest{ra, rb} {
			if err := <-r.result; err != nil {
				t.Fatal(err)
			}
		}
		for i, want := range []domain.RunState{domain.StateSucceeded, domain.StateProcessing, domain.StateSucceeded} {
			run, _ := s.GetRun(ctx, runs[i].ID)
			atts, _ := s.Attempts(ctx, runs[i].ID)
			wantAtts := 1
			if want == domain.StateProcessing {
				wantAtts = 0
			}
			if run.State != want || len(atts) != wantAtts {
				t.Fatalf("run %d: %s with %d attempts, want %s with %d", i, run.State, len(atts), want, wantAtts)
			}
		}
		if aa.ID == 0 || ab.ID == 0 || al.ID != 0 {
			t.Fatalf("attempt IDs %d, %d, refused %d", aa.ID, ab.ID, al.ID)
		}

		// A statement the server rejects: nothing of the batch is kept, then each write is
		// made once by its fn.
		rc, ac := chained(runs[3].ID, "me")
		bad := request(ctx, noteWrite(s, runs[3].ID, "alone"))
		bad.one = &oneStmt{query: `SELECT 1 / (SELECT count(*)::int FROM runs WHERE id = 'none')`,
			scan: func(row interface{ Scan(...any) error }) error { var n int; return row.Scan(&n) }}
		rd, ad := chained(runs[4].ID, "me")
		s.group.run([]*txRequest{rc, bad, rd})
		for _, r := range []*txRequest{rc, bad, rd} {
			if err := <-r.result; err != nil {
				t.Fatal(err)
			}
		}
		if countNotes(t, s, "alone") != 1 {
			t.Fatal("the rejected statement's write was not made exactly once by its fn")
		}
		for _, r := range runs[3:] {
			atts, _ := s.Attempts(ctx, r.ID)
			run, _ := s.GetRun(ctx, r.ID)
			if len(atts) != 1 || run.State != domain.StateSucceeded {
				t.Fatalf("run %s: %s with %d attempts after the batch went again alone", r.ID, run.State, len(atts))
			}
			events, _ := s.Events(ctx, r.ID)
			n := 0
			for _, e := range events {
				if e.To == domain.StateSucceeded {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("run %s has %d succeeded events", r.ID, n)
			}
		}
		if ac.ID == 0 || ad.ID == 0 {
			t.Fatal("attempts of the batch that went again alone lost their IDs")
		}
	})
}
