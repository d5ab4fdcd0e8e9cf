package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pipectl/pipectl/internal/domain"
)

// Finisher executes a run that a claim holds locked and uncommitted, and says what to write in
// its place (see engine.Finish); nil means the claim takes the run the usual way.
type Finisher = func(ctx context.Context, run *domain.Run) *domain.Finished

// ClaimFinishing claims like ClaimBatch, but offers each fresh run (queued, no attempt yet) to
// finish before the claim commits: a run it finishes is written in the claim's transaction
// with its attempts and its end, queued to its end in one update of its row, instead of a claim
// that commits it as processing and a second write that ends it. A run of pure steps costs the
// ledger half the updates of runs, and the worker no lease, heartbeat or slot.
//
// Nothing of a finished run is visible before that commit, and nothing of it happened anywhere
// else: should the claim fail, or its process die first, the run is still queued and the next
// claim runs it again. The runs that are not finished are claimed as ClaimBatch claims them,
// in the same transaction. The transaction ends on the server when it is idle for longer than
// the lease (until): a process stopped mid-claim leaves its runs to others no later than
// a lease would. Finishing stops once a quarter of the lease went by (a run then under way
// stops between two steps); the rest are claimed.
//
// stop ends the finishing as the budget does: once it is done, the claim executes and locks
// no more runs (the run under way stops between two steps), and claims what it holds; ctx
// is for the ledger's work.
//
// It locks up to n runs at a time, and, while it finished every run it locked so far, up to n
// more after them, until it locked most (at least n): a claim that finishes its runs costs the
// ledger a begin and a commit however many it takes, and uses no slot for them. It never holds
// a run it does not take: the runs it does not finish all come from its last lock, and it
// claims them all, so never more than n. full says that last lock found as many runs as it
// asked for: more may be due.
//
// It finishes runs on PostgreSQL for claims the one-statement claim serves (no cap per
// pipeline, no pipeline switched off behind a backlog); otherwise it is ClaimBatch of n. It
// returns the claimed runs and the finished ones in claim order; with an error, nothing was
// finished, and the runs it returns are claimed all the same (when the server refused the
// finished runs' write, those of its runs still due and not taken by another claim
// meanwhile, up to most in all: see writeHeld).
func (s *Store) ClaimFinishing(ctx, stop context.Context, owner string, until time.Time, f domain.ClaimFilter, n, most int, finish Finisher) ([]*domain.Run, []*domain.Finished, bool, error) {
	if n < 1 {
		return nil, nil, false, nil
	}
	if s.dialect != "postgres" || f.MaxPerPipeline > 0 || finish == nil || len(f.Pipelines) == 0 && s.switchedOff(ctx) {
		runs, err := s.ClaimBatch(ctx, owner, until, f, n)
		return runs, nil, len(runs) == n, err
	}
	most = max(n, most)
	conn, err := s.claims.Conn(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("claim: %w", retryable(err))
	}
	defer conn.Close()
	var claimed []*domain.Run
	var finished []*domain.Finished
	var full bool
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(interface{ Conn() *pgx.Conn })
		if !ok {
			return fmt.Errorf("claim: driver connection %T is not pgx's", dc)
		}
		var err error
		claimed, finished, full, err = s.claimHeld(ctx, stop, pc.Conn(), owner, until, f, n, most, finish)
		return err
	})
	return claimed, finished, full, err
}

func (s *Store) claimHeld(ctx, stop context.Context, c *pgx.Conn, owner string, until time.Time, f domain.ClaimFilter, n, most int, finish Finisher) (claimed []*domain.Run, finished []*domain.Finished, full bool, err error) {
	start := s.now()
	lease := max(until.Sub(start), time.Second)
	if _, err := c.Exec(ctx, "BEGIN; SET LOCAL idle_in_transaction_session_timeout = "+strconv.FormatInt(lease.Milliseconds(), 10)); err != nil {
		return nil, nil, false, fmt.Errorf("claim: %w", retryable(err))
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		// Nothing was written that the rollback takes back but the locks: the runs are queued
		// as they were, for this claim's next try or another worker. (After a COMMIT whose
		// answer was lost, it finds no transaction, which is harmless.) A connection that
		// cannot even roll back is closed, so that the pool never hands out a transaction.
		if _, err := c.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	// A run still executing when the budget is spent is stopped between two of its steps and
	// claimed (it starts over in a slot, under a lease its heartbeat renews): however long a run
	// of pure steps takes, the transaction is never idle for a whole lease because of it, and
	// no run comes back to hold a claim again and again.
	fctx, cancel := context.WithTimeout(stop, lease/4)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	// The runs are locked n at a time, in claim order, and the next n only once every run of
	// the last was finished: the claim never holds a run it does not take, and what it claims
	// for slots (rest) comes from its last lock alone, so it is never more than n.
	var rest, taken []string
	for len(taken) < most && len(rest) == 0 && fctx.Err() == nil {
		ask := min(n, most-len(taken))
		locked, err := lockDue(ctx, c, f, start, ask, taken)
		if err != nil {
			return nil, nil, false, fmt.Errorf("claim: %w", err)
		}
		full = len(locked) == ask
		for i := range locked {
			r := &locked[i]
			var done *domain.Finished
			if r.State == string(domain.StateQueued) && !r.Begun && fctx.Err() == nil {
				run := r.domain()
				run.Unstarted = true
				done = finish(fctx, run)
			}
			if done != nil && domain.CanTransition(domain.StateProcessing, done.Change.To) && done.Change.To != domain.StateProcessing {
				finished = append(finished, done)
				taken = append(taken, r.ID)
				continue
			}
			rest = append(rest, r.ID)
		}
		if !full {
			break
		}
	}
	if len(rest) == 0 && len(finished) == 0 {
		return nil, nil, false, nil
	}
	claimed, finished, err = s.writeHeld(ctx, c, owner, until, start, rest, finished)
	if err != nil && claimed != nil {
		committed = true
		return claimed, nil, full, fmt.Errorf("claim: %w", err)
	}
	if err != nil {
		// Sent, so its outcome may be unknown, as in claimOnce: the runs claimed after all
		// wait for their lease, and the finished ones are written whole or still queued.
		return nil, nil, false, fmt.Errorf("claim: %w", retryable(&commitError{err}))
	}
	committed = true
	return claimed, finished, full, nil
}

// lockDue locks up to n due runs in claim order (lockSQL), past the runs the claim took so far
// (taken, finished and not yet written: still queued, and locked by this transaction, which
// SKIP LOCKED does not skip).
func lockDue(ctx context.Context, c *pgx.Conn, f domain.ClaimFilter, now time.Time, n int, taken []string) ([]claimedRow, error) {
	filtered := len(f.Pipelines) > 0
	var args []any
	if filtered {
		// Planned with the pipelines known, as claimArgs says.
		args = append(args, pgx.QueryExecModeSimpleProtocol, ms(now), f.Pipelines)
	} else {
		args = append(args, ms(now))
	}
	if len(taken) > 0 {
		args = append(args, taken)
	}
	rows, err := c.Query(ctx, lockSQL(n, filtered, len(taken) > 0), args...)
	if err != nil {
		return nil, retryable(err)
	}
	defer rows.Close()
	var locked []claimedRow
	for rows.Next() {
		var r claimedRow
		if err := rows.Scan(append(r.dest(), &r.Begun)...); err != nil {
			return nil, err
		}
		locked = append(locked, r)
	}
	if err := rows.Err(); err != nil {
		return nil, retryable(err)
	}
	return locked, nil
}

// writeHeld writes what a claim decided for the runs it holds: rest to processing, finished to
// their ends, then commits, in one round trip. A statement that fails makes the server skip the
// rest, COMMIT included (the caller then rolls back).
//
// When the server refuses the finished runs' write (a value it cannot store, a check), the
// claim is rolled back and its runs, finished or not, are claimed to processing in a
// transaction of their own, to run in slots, where a refused write stays with its own run.
// Otherwise the next claim, taking the same oldest runs, would meet the refusal again, and so
// on.
//
// There is no savepoint before the finished runs' write, though one would keep the rest's
// claim: a row locked by the transaction and then updated under a savepoint gets a multixact
// as its deleter, and an index scan never marks the entry of such a dead row dead (only pruning
// and vacuum remove it). Every later lock then walked every run finished since the table was
// last vacuumed: 50-65 index entries a run, and 9 ms a lock once 11,000 runs were done.
func (s *Store) writeHeld(ctx context.Context, c *pgx.Conn, owner string, until, start time.Time, rest []string, finished []*domain.Finished) ([]*domain.Run, []*domain.Finished, error) {
	var claimed []*domain.Run
	b := &pgx.Batch{}
	if len(rest) > 0 {
		b.Queue(heldClaimSQL(), ms(start), owner, ms(until), abandonedReason, rest)
	}
	if len(finished) > 0 {
		b.Queue(finishedSQL, finishedArgs(finished, owner, ms(start), ms(s.now()))...)
	}
	b.Queue("COMMIT")
	br := c.SendBatch(ctx, b)
	var refused error
	err := func() error {
		var err error
		if len(rest) > 0 {
			// Each run of rest is locked by this transaction, so each one moves.
			if claimed, err = scanHeldClaim(br); err != nil {
				return err
			}
		}
		if len(finished) > 0 {
			if err := scanFinished(br, finished); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					refused = err
					return nil
				}
				return err
			}
		}
		_, err = br.Exec()
		return err
	}()
	if cerr := br.Close(); err == nil && refused == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	if refused == nil {
		return claimed, finished, nil
	}
	if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
		return nil, nil, err
	}
	// The runs were unlocked for a moment: each is claimed if it is still due and no other
	// claim took it meanwhile. They are locked first, and claimed by a later statement of the
	// same transaction (no savepoint: no multixact): its snapshot and its time follow the lock,
	// so it sees, and closes, any attempt an old owner committed before, and its events are
	// dated after anything that happened to the runs.
	ids := append([]string(nil), rest...)
	for _, f := range finished {
		ids = append(ids, f.Run.ID)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		return nil, nil, err
	}
	rows, err := c.Query(ctx, relockSQL, ms(s.now()), ids)
	if err != nil {
		return nil, nil, err
	}
	locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, err
	}
	claimed = []*domain.Run{}
	b = &pgx.Batch{}
	if len(locked) > 0 {
		b.Queue(heldClaimSQL(), ms(s.now()), owner, ms(until), abandonedReason, locked)
	}
	b.Queue("COMMIT")
	br = c.SendBatch(ctx, b)
	err = func() error {
		if len(locked) > 0 {
			more, err := scanHeldClaim(br)
			if err != nil {
				return err
			}
			claimed = append(claimed, more...)
		}
		_, err := br.Exec()
		return err
	}()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	sortClaimed(claimed)
	// The log says what became of the runs: claimed for slots here, or left to the claim
	// that took them in the moment between.
	if len(claimed) == len(ids) {
		refused = fmt.Errorf("the ledger refused the runs this claim had finished, which it claimed to run in slots instead: %w", refused)
	} else {
		refused = fmt.Errorf("the ledger refused the runs this claim had finished; it claimed %d of its %d runs to run in slots instead, and left the others to the claims that took them meanwhile: %w",
			len(claimed), len(ids), refused)
	}
	return claimed, nil, refused
}

// relockSQL locks those of the runs $2 that are still due at $1 and that no other transaction
// holds.
var relockSQL = `SELECT id FROM runs WHERE id = ANY($2::text[]) AND (` + readySQL(`$1`) + ` OR ` + expiredSQL(`$1`) + `)
	ORDER BY created_at, id FOR UPDATE SKIP LOCKED`

type lockKey struct {
	n              int
	filtered, more bool
}

var lockStatements sync.Map // lockKey -> string

// lockSQL locks up to n due runs and returns them whole, in claim order, with whether any
// attempt of theirs exists. It locks no run it does not return, since a claim that finishes
// runs holds its locks while it executes them: the runs whose lease ran out come first (a dead
// worker's runs, few), then the runs ready to start for what is left of n, each read in its own
// index in claim order.
//
// more is a claim's next lock, after runs it took (the last parameter): it skips those, and
// takes neither a run queued after the claim began ($1) nor a run whose lease ran out, since
// its claim and takeover events would be dated before what happened to it meanwhile (queued,
// handed back). Its bound on created_at is written so that no index serves it (+ 0): no bound
// on created_at is left that runs_created could read a range by, which a generic plan made on
// a small queue then sorts on a large one (a first version, which went on from the claim's last
// run by a keyset, did that: 20-90 ms a lock with 20,000 runs queued). The price is that each
// lock reads the head of runs_ready again: the claim's own runs and what no claim may take yet
// (a switched-off pipeline's runs, retries not due), as the first lock does.
func lockSQL(n int, filtered, more bool) string {
	key := lockKey{n: n, filtered: filtered, more: more}
	if q, ok := lockStatements.Load(key); ok {
		return q.(string)
	}
	limit := strconv.Itoa(n)
	rest := mayTakeSQL(filtered, `$2`) + ` ORDER BY created_at, id LIMIT `
	expired, ready := expiredSQL(`$1`), rest
	if more {
		taken := `$2`
		if filtered {
			taken = `$3`
		}
		expired = `false`
		ready = ` AND created_at + 0 <= $1 AND id <> ALL(` + taken + `::text[])` + rest
	}
	q := `WITH expired AS (SELECT ` + runColumns + ` FROM runs
	WHERE ` + expired + rest + limit + ` FOR UPDATE SKIP LOCKED),
ready AS (SELECT ` + runColumns + ` FROM runs
	WHERE ` + readySQL(`$1`) + ready +
		`(` + limit + ` - (SELECT count(*) FROM expired)) FOR UPDATE SKIP LOCKED)
SELECT *, EXISTS (SELECT 1 FROM step_attempts WHERE step_attempts.run_id = due.id OFFSET 0) AS begun
FROM (SELECT * FROM expired UNION ALL SELECT * FROM ready) due ORDER BY created_at, id`
	lockStatements.Store(key, q)
	return q
}

// heldClaimSQL moves runs the claim's transaction holds ($5) to processing, as claimSQL does.
var heldClaimSQL = sync.OnceValue(func() string {
	return `WITH c AS (SELECT id, state, lease_owner, lease_expires_at, created_at FROM runs WHERE id = ANY($5::text[])),` +
		claimWritesSQL + claimedSQL
})

func scanHeldClaim(br pgx.BatchResults) ([]*domain.Run, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var claimed []*domain.Run
	for rows.Next() {
		var r claimedRow
		var priorOwner sql.NullString
		var priorExpires int64
		if err := rows.Scan(append(r.dest(), &r.Begun, &priorOwner, &priorExpires)...); err != nil {
			return nil, err
		}
		run := r.domain()
		// The attempts a taken-over run's old owner left running were closed in this
		// transaction, which held the run since before it read them: none can be missing.
		run.Unstarted = !r.Begun
		claimed = append(claimed, run)
	}
	return claimed, rows.Err()
}

// finishedSQL writes the runs a claim finished ($1-$9, parallel arrays): each moves from
// queued to its end in one update, with a processing event at the claim's time ($11) for the
// owner ($10) and the event of its end, and its attempts ($12-$25, naming their run). It fails
// (division by zero) unless every run was queued, so that the claim's transaction is rolled
// back whole, and returns a row per attempt written.
var finishedSQL = `WITH r AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
    AS r(id, to_state, next_attempt_at, error_class, error, failed_step, reason, actor, at)
),
moved AS (
  UPDATE runs SET state = r.to_state, updated_at = r.at, lease_owner = '', lease_expires_at = 0,
    next_attempt_at = r.next_attempt_at, error_class = r.error_class, error = r.error, failed_step = r.failed_step,
    finished_at = CASE WHEN r.to_state IN ('succeeded', 'failed_permanent') THEN r.at ELSE runs.finished_at END
  FROM r
  WHERE runs.id = r.id AND runs.state = 'queued'
  RETURNING runs.id, runs.pipeline, runs.created_at, r.to_state, r.reason, r.actor, r.at
),
a AS (
  ` + insertAttemptsSQL(12, "moved") + `
),
ev AS (
  INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at)
  SELECT id, from_state, to_state, reason, actor, at FROM (
    SELECT id, created_at, 0 AS k, 'queued' AS from_state, 'processing' AS to_state, 'claimed by ' || $10 AS reason, $10 AS actor, $11::bigint AS at FROM moved
    UNION ALL
    SELECT id, created_at, 1, 'processing', to_state, reason, actor, at FROM moved
  ) e ORDER BY created_at, id, k
),
whole AS (
  SELECT 1 / (CASE WHEN (SELECT count(*) FROM moved) = cardinality($1::text[]) THEN 1 ELSE 0 END) AS ok
)
SELECT a.id, a.run_id, a.step_id, a.item_index, a.attempt, whole.ok FROM whole LEFT JOIN a ON true`

// finishedArgs lays the finished runs out as finishedSQL's arrays; claimedAt is the time of
// their processing events, at that of their ends.
func finishedArgs(finished []*domain.Finished, owner string, claimedAt, at int64) []any {
	n := 0
	for _, f := range finished {
		n += len(f.Attempts)
	}
	ids, tos, classes, errs, steps, reasons, actors := make([]string, 0, len(finished)), make([]string, 0, len(finished)),
		make([]string, 0, len(finished)), make([]string, 0, len(finished)), make([]string, 0, len(finished)),
		make([]string, 0, len(finished)), make([]string, 0, len(finished))
	nexts, ats := make([]int64, 0, len(finished)), make([]int64, 0, len(finished))
	atts := newAttemptArrays(n)
	for _, f := range finished {
		ch := storableText(f.Change)
		ids, tos, nexts = append(ids, f.Run.ID), append(tos, string(ch.To)), append(nexts, ms(ch.NextAttemptAt))
		classes, errs, steps = append(classes, string(ch.ErrorClass)), append(errs, ch.Error), append(steps, ch.FailedStep)
		reasons, actors, ats = append(reasons, ch.Reason), append(actors, ch.Actor), append(ats, at)
		for _, a := range f.Attempts {
			r := toRow(a)
			r.RunID = f.Run.ID
			atts.add(r)
		}
	}
	return append([]any{ids, tos, nexts, classes, errs, steps, reasons, actors, ats, owner, claimedAt}, atts.args()...)
}

// scanFinished reads finishedSQL's answer and gives each attempt written its ID.
func scanFinished(br pgx.BatchResults, finished []*domain.Finished) error {
	type key struct {
		run string
		attemptKey
	}
	byKey := make(map[key]*domain.Attempt)
	for _, f := range finished {
		for _, a := range f.Attempts {
			byKey[key{f.Run.ID, attemptKey{a.StepID, a.ItemIndex, a.Attempt}}] = a
		}
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	written := 0
	for rows.Next() {
		var id sql.NullInt64
		var run, step sql.NullString
		var item, attempt sql.NullInt32
		var ok int
		if err := rows.Scan(&id, &run, &step, &item, &attempt, &ok); err != nil {
			return err
		}
		if !id.Valid {
			continue
		}
		if a := byKey[key{run.String, attemptKey{step.String, int(item.Int32), int(attempt.Int32)}}]; a != nil {
			a.ID = id.Int64
			written++
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if written != len(byKey) {
		return errors.New("the attempts of a finished run were not all written")
	}
	return nil
}
