package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// NotifyChannel is the PostgreSQL channel new queued runs are announced on.
const NotifyChannel = "pipectl_runs"

// ClaimNext takes one due run for owner; see ClaimBatch.
func (s *Store) ClaimNext(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter) (*domain.Run, error) {
	runs, err := s.ClaimBatch(ctx, owner, until, f, 1)
	if len(runs) == 0 {
		return nil, err
	}
	return runs[0], err // claimed even with an error: see ClaimBatch
}

// claimCandidate is a due run locked by a claim, with what the claim must know of it.
type claimCandidate struct {
	ID       string `db:"id"`
	State    string `db:"state"`
	Owner    string `db:"lease_owner"`
	Expires  int64  `db:"lease_expires_at"`
	Pipeline string `db:"pipeline"`
}

// ClaimBatch takes up to n due runs for owner in one transaction, oldest first (created_at,
// then id): queued runs, failed_transient runs whose retry is due, and processing runs whose
// lease expired (taken over: the attempts they left running become abandoned). Disabled
// pipelines are skipped; f narrows the pipelines and caps the runs of one pipeline in
// processing across all workers. It returns the claimed runs in that order, none when nothing
// is due; with an error, the runs it returns are claimed all the same, and must be run.
//
// The statements are the same whatever n is: one SELECT locks the candidates (PostgreSQL skips
// rows other workers are claiming, FOR UPDATE SKIP LOCKED; SQLite holds its write lock), one
// UPDATE per kind of claim moves them all, one INSERT records every claim event.
func (s *Store) ClaimBatch(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error) {
	if n < 1 {
		return nil, nil
	}
	if s.dialect == "postgres" && f.MaxPerPipeline == 0 {
		return s.claimStatement(ctx, owner, until, f, n)
	}
	if s.dialect == "sqlite" {
		s.prepareClaim(ctx, f, n)
	}
	var claimed []*domain.Run
	// A claim commits on its own, outside any group commit: its row locks must be held as
	// briefly as possible, and a worker waits for nothing else. It stays on the ledger's own
	// connections: the caps' count of busy runs per candidate needs bitmap scans, which the
	// claim's connections do without (a read of the whole table per candidate there, 10-30 ms
	// each on 70,000-220,000 runs).
	err := s.directTx(ctx, func(tx *sqlx.Tx) error {
		claimed = nil
		now := s.now()
		cands, err := s.claimCandidates(ctx, tx, now, f, n)
		if err != nil || len(cands) == 0 {
			return err
		}
		if f.MaxPerPipeline > 0 {
			if cands, err = s.withinCaps(ctx, tx, now, f.MaxPerPipeline, cands); err != nil || len(cands) == 0 {
				return err
			}
		}
		var fresh, expired []string
		for _, c := range cands {
			if c.State == string(domain.StateProcessing) {
				expired = append(expired, c.ID)
			} else {
				fresh = append(fresh, c.ID)
			}
		}
		rows := make(map[string]claimedRow, len(cands))
		if len(expired) > 0 {
			// Attempts the dead owner left running are closed first, while the run rows still
			// name that owner.
			q, args := s.inList(`UPDATE step_attempts SET outcome = 'abandoned', finished_at = ?,
				error = CASE WHEN (SELECT lease_expires_at FROM runs WHERE runs.id = step_attempts.run_id) = ? THEN ? ELSE ? END ||
					' (' || (SELECT lease_owner FROM runs WHERE runs.id = step_attempts.run_id) || ')'
				WHERE outcome = 'running' AND run_id %s`, expired, ms(now), handedBack, abandonedHandedBack, abandonedReason)
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
			q, args = s.claimExpiredQuery(expired, owner, until, now)
			if err := s.collect(ctx, tx, rows, q, args); err != nil {
				return err
			}
		}
		if len(fresh) > 0 {
			q, args := s.claimFreshQuery(fresh, owner, until, now)
			if err := s.collect(ctx, tx, rows, q, args); err != nil {
				return err
			}
		}
		// The candidates are locked, so every one of them moved; a missing row would mean the
		// lock did not hold, and claiming the rest would hide it.
		if len(rows) != len(cands) {
			return fmt.Errorf("%d of %d locked runs changed under the claim: %w", len(cands)-len(rows), len(cands), domain.ErrStateConflict)
		}
		args := make([]any, 0, 6*len(cands))
		for _, c := range cands {
			reason := "claimed by " + owner
			if c.State == string(domain.StateProcessing) {
				reason = takeoverReason(c.Owner, c.Expires, owner)
			}
			args = append(args, c.ID, c.State, string(domain.StateProcessing), reason, owner, ms(now))
		}
		if _, err := s.txExec(ctx, tx, claimEventsSQL(len(cands)), args...); err != nil {
			return err
		}
		claimed = make([]*domain.Run, len(cands))
		for i, c := range cands {
			r := rows[c.ID]
			claimed[i] = r.domain()
			// A run without any attempt starts from its first step: its claimer need not
			// read its history back.
			claimed[i].Unstarted = !r.Begun
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return claimed, nil
}

// claimEventsSQL inserts the events of n claims.
func claimEventsSQL(n int) string {
	return `INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?), ", n), ", ")
}

// maxPreparedClaim is the largest SQLite claim whose statements are kept prepared; larger ones
// prepare theirs each time.
const maxPreparedClaim = 128

// prepareClaim prepares, before a SQLite claim of up to n runs opens its transaction (with
// one connection, preparing inside it would wait for itself), the statements the claim may
// run: the count of pipelines switched off, the walk of the queue for f and n (its limit is in
// its text), and the update and the events of 1 to n runs. Prepared afresh at each claim,
// their parsing and planning were a sixth of a worker's CPU when it drained ten-step runs at
// synchronous=NORMAL. A statement that cannot be prepared here is run from its text, as before.
func (s *Store) prepareClaim(ctx context.Context, f domain.ClaimFilter, n int) {
	now := s.now()
	queries := []string{switchesOffSQL}
	// A capped claim walks only the pipelines with room (claimCandidates), another text: its
	// walk would be prepared for nothing.
	if n <= maxPreparedClaim && f.MaxPerPipeline == 0 {
		walk, _ := s.candidatesQuery(now, f, n)
		queries = append(queries, walk)
	}
	sizes, want := s.claimSizes.Load(), int32(min(n, maxPreparedClaim))
	for k := sizes + 1; k <= want; k++ {
		update, _ := s.claimFreshQuery(make([]string, k), "", now, now)
		queries = append(queries, update, claimEventsSQL(int(k)))
	}
	for _, q := range queries {
		if _, err := s.prepareOnce(ctx, &s.claimStmts, q, func() string { return q }); err != nil {
			return
		}
	}
	for sizes < want && !s.claimSizes.CompareAndSwap(sizes, want) {
		sizes = s.claimSizes.Load()
	}
}

// claimFreshQuery and claimExpiredQuery move locked candidates to processing under owner and
// return them. The candidates are found by id: on SQLite the test of their state must not use
// runs_state_due, which the planner picks once there are a dozen ids or so, and which then
// reads every queued run at each claim (3-5 ms a claim of 16 with 5,000 queued, 0.2 ms by id).
func (s *Store) claimFreshQuery(ids []string, owner string, until, now time.Time) (string, []any) {
	return s.inList(`UPDATE runs SET state = 'processing', updated_at = ?, lease_owner = ?, lease_expires_at = ?, next_attempt_at = 0
		WHERE `+s.unindexed("state")+` IN ('queued', 'failed_transient') AND id %s RETURNING `+runColumns+claimBegun, ids, ms(now), owner, ms(until))
}

func (s *Store) claimExpiredQuery(ids []string, owner string, until, now time.Time) (string, []any) {
	return s.inList(`UPDATE runs SET lease_owner = ?, lease_expires_at = ?, updated_at = ?
		WHERE `+s.unindexed("state")+` = 'processing' AND id %s RETURNING `+runColumns+claimBegun, ids, owner, ms(until), ms(now))
}

// unindexed is column as a term no index serves: SQLite's unary plus, which PostgreSQL does not
// have for text (its planner does not need it here).
func (s *Store) unindexed(column string) string {
	if s.dialect == "sqlite" {
		return "+" + column
	}
	return column
}

// handedBack is domain.LeaseHandedBack as stored: a claim that takes such a run over says it
// was handed back, rather than that its owner stopped renewing.
var handedBack = ms(domain.LeaseHandedBack)

// takeoverReason is the event of a claim that takes a processing run over from prior (the
// one-statement claim on PostgreSQL says the same in SQL). An operator's enqueue leaves no
// owner to name.
func takeoverReason(prior string, expires int64, owner string) string {
	why := "lease expired"
	if expires == handedBack {
		why = "handed back"
	}
	if prior == "" {
		return "taken over (" + why + ") by " + owner
	}
	return "taken over from " + prior + " (" + why + ") by " + owner
}

// abandonedReason is the error of an attempt left running by a process whose lease expired,
// followed by that process's name in brackets; abandonedHandedBack that of an attempt left
// running in a run handed back (a worker stopped in the middle of a step).
const (
	abandonedReason     = "the process running this attempt stopped renewing its lease"
	abandonedHandedBack = "the run was handed back while this attempt was running"
)

func abandonedWhy(expires int64) string {
	if expires == handedBack {
		return abandonedHandedBack
	}
	return abandonedReason
}

// claimStatement is ClaimBatch on PostgreSQL without a per-pipeline cap: one statement, so
// one round trip and its own commit, instead of a transaction of five. It locks the due runs
// (FOR UPDATE SKIP LOCKED), closes the attempts left running by the owners of expired leases,
// moves every locked run to processing under owner and records each claim's event, all in one
// snapshot. Caps need advisory locks taken before counting, so they keep the transaction.
func (s *Store) claimStatement(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n int) ([]*domain.Run, error) {
	if len(f.Pipelines) > 0 || !s.switchedOff(ctx) {
		claimed, _, err := s.claimOnce(ctx, owner, until, f, n, 0)
		return claimed, err
	}
	// Past a backlog switched off, the claim reads each pipeline's queue as far as a window
	// (claimSQL). Other claims may hold all of it, or have taken it since the statement's
	// snapshot: then a window four times as wide, and so on up to four rounds, each with a
	// snapshot of its own, so that the claim does not come back short while runs are due (the
	// fetcher would take that for an empty queue, and wait for the next poll). Twelve claimers
	// of 16 on two busy cores emptied two rounds (128 and 512 runs) once in ten or fifteen
	// tries. A round whose window was not full ends the claim (below). A window's width
	// depends on what is left to claim and the round only, so that a connection prepares a
	// bounded number of claim statements (at most claimRounds per claim size).
	var claimed []*domain.Run
	for round, rest := 0, n; round < claimRounds && rest > 0; round++ {
		window := claimWindow(rest) << (2 * round)
		more, seen, err := s.claimOnce(ctx, owner, until, f, rest, window)
		claimed = append(claimed, more...)
		if err != nil {
			// The runs of earlier rounds are this worker's whatever this one meets.
			sortClaimed(claimed)
			return claimed, err
		}
		rest -= len(more)
		if seen < window {
			// Every due run fit in the window: a wider one would find no more (the runs
			// other claims hold are theirs). An idle worker's claim, or one at the end of a
			// queue, stops here.
			break
		}
	}
	sortClaimed(claimed)
	return claimed, nil
}

// claimRounds is how many windows, each four times as wide as the one before, a claim past a
// backlog switched off reads before it comes back short.
const claimRounds = 4

// sortClaimed puts the runs of several claim statements in claim order.
func sortClaimed(runs []*domain.Run) {
	slices.SortFunc(runs, func(a, b *domain.Run) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// claimOnce is one claim statement (claimSQL) of up to n runs; window is 0 for the walk of the
// queue, else how far each pipeline's queue is read, and then seen is how many due runs the
// window held.
func (s *Store) claimOnce(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter, n, window int) (claimed []*domain.Run, seen int, err error) {
	now := ms(s.now())
	args := claimArgs(now, owner, ms(until), f)
	type claimedBy struct {
		claimedRow
		PriorOwner   *string
		PriorExpires int64
	}
	var rows []claimedBy
	windowed := readsWindow(window, len(f.Pipelines) > 0)
	err = func() error {
		res, err := s.claims.QueryContext(ctx, claimSQL(n, len(f.Pipelines) > 0, window), args...)
		if err != nil {
			return err
		}
		defer res.Close()
		for res.Next() {
			var r claimedBy
			dest := append(r.dest(), &r.Begun, &r.PriorOwner, &r.PriorExpires)
			if windowed {
				dest = append(dest, &seen)
			}
			if err := res.Scan(dest...); err != nil {
				return err
			}
			if r.ID != "" { // a windowed claim that took nothing says so in a row of zeros
				rows = append(rows, r)
			}
		}
		return res.Err()
	}()
	if err != nil {
		// The statement commits itself: a failure after it was sent has an unknown outcome,
		// like an error at COMMIT (runs claimed after all wait for their lease to expire).
		return nil, 0, fmt.Errorf("claim: %w", retryable(&commitError{err}))
	}
	claimed = make([]*domain.Run, 0, len(rows))
	var unclosed error
	for _, r := range rows {
		run := r.domain()
		run.Unstarted = !r.Begun
		if r.PriorOwner != nil {
			// The statement saw the attempts of its snapshot only: the old owner may have
			// committed one (running, or finished) between that snapshot and the lock. Now that
			// the run is ours it can add none, so its running ones are closed here, and the
			// run's history is read back whatever the snapshot said.
			run.Unstarted = false
			if _, err := s.db.ExecContext(ctx, `UPDATE step_attempts SET outcome = 'abandoned', finished_at = $1,
				error = $2 || ' (' || $3 || ')' WHERE run_id = $4 AND outcome = 'running'`, now, abandonedWhy(r.PriorExpires), *r.PriorOwner, r.ID); err != nil {
				// Not started with an attempt left running: its lease runs out and a claim
				// takes it over again. The other runs of the claim are this worker's all the
				// same, and go on (they were dropped with it before, to wait for their leases).
				unclosed = errors.Join(unclosed, fmt.Errorf("claim: run %s, taken over, is left for its lease to run out: closing the attempts its last owner left running: %w", r.ID, err))
				continue
			}
		}
		claimed = append(claimed, run)
	}
	return claimed, seen, unclosed
}

// claimArgs are claimSQL's arguments. A claim limited to some pipelines is planned for those
// pipelines at each claim: the claim connections otherwise use a plan made without knowing them
// (plan_cache_mode, which also holds for unnamed statements), which walks the whole queue in
// claim order, and behind a backlog of another pipeline's runs that walk passed every one of them
// (200,000 queued: 45-95 ms a claim, against 0.1-1 ms reading the pipeline's own runs; found by a
// review). So it goes by the simple protocol: the driver writes the values into the statement's
// text, quoted (it refuses to unless the server has standard_conforming_strings on), and the
// server plans that text once, with them.
func claimArgs(now int64, owner string, until int64, f domain.ClaimFilter) []any {
	if len(f.Pipelines) == 0 {
		return []any{now, owner, until, abandonedReason}
	}
	return []any{pgx.QueryExecModeSimpleProtocol, now, owner, until, abandonedReason, f.Pipelines}
}

type claimKey struct {
	n, window int
	filtered  bool
}

var claimStatements sync.Map // claimKey -> string

// claimSQL is claimStatement's statement for n runs. The limit is written into the text
// rather than passed: PostgreSQL plans a prepared statement once for every later call, and
// with an unknown limit it assumes a tenth of the queue, then joins the locked runs back by
// hashing the whole table; with the limit known it looks each one up by its key. OFFSET 0
// keeps the test for attempts already made a lookup per claimed run: without it a cached plan
// made while statistics said step_attempts was small hashed every attempt at every claim. A worker
// claims between 1 and its concurrency runs at a time, so there are that many texts at most.
//
// The runs due are read in two branches, each in its own index and in claim order, and the
// first n of both are taken: runs ready to start (runs_ready: queued, retries) and runs whose
// lease ran out (runs_leases, the runs in flight by lease expiry). Each branch locks the rows
// it reads, up to n, so when both have runs due the claim holds up to n runs it does not take
// until it commits, a millisecond later; a worker claiming meanwhile takes the next ones. Leases run out only when a worker died or
// stalled, so almost every claim reads one branch and locks exactly what it takes.
//
// With a window (unfiltered claims only), the statement of a claim past a backlog switched off
// (switchedOff): it lists the pipelines with runs queued, one index seek each in
// runs_queued_pipeline, and reads each one's queue on its own (duePerPipelineSQL) as far as the
// window, rather than walk the whole queue past that backlog.
func claimSQL(n int, filtered bool, window int) string {
	key := claimKey{n: n, window: window, filtered: filtered}
	if q, ok := claimStatements.Load(key); ok {
		return q.(string)
	}
	limit := strconv.Itoa(n)
	rest := mayTakeSQL(filtered, `$5`) + ` ORDER BY created_at, id LIMIT ` + limit + ` FOR UPDATE SKIP LOCKED`
	c := `WITH c AS (SELECT * FROM (` + dueBranchesSQL(`id, state, lease_owner, lease_expires_at, created_at`, `$1`, rest) + `
	) due ORDER BY created_at, id LIMIT ` + limit + `),`
	if readsWindow(window, filtered) {
		switchedOn := `pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled)`
		c = queuedPipelinesSQL + `,
allowed AS (SELECT name FROM queued WHERE name IS NOT NULL AND name NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled)),
due AS MATERIALIZED (` + duePerPipelineSQL(`allowed`, switchedOn, `$1`, ``, strconv.Itoa(window)) + `),
c AS (` + lockDueSQL(`$1`, limit) + `),`
	}
	q := c + claimWritesSQL
	if readsWindow(window, filtered) {
		// The claimed runs and how many due runs the window held (claimStatement reads on only
		// when it was full); a claim that took none returns one row of zero values.
		q += `SELECT ` + movedOrZero() + `, COALESCE(begun, false), CASE WHEN prior_state = 'processing' THEN prior_owner END AS prior_owner,
	COALESCE(prior_expires, 0), seen.n FROM (SELECT count(*) AS n FROM due) seen LEFT JOIN moved ON true ORDER BY moved.created_at, moved.id`
	} else {
		q += claimedSQL
	}
	claimStatements.Store(key, q)
	return q
}

// runsColumns is runColumns, each of the table runs.
var runsColumns = "runs." + strings.ReplaceAll(strings.Join(strings.Fields(runColumns), " "), ", ", ", runs.")

// claimedSQL returns what claimWritesSQL moved, in claim order.
const claimedSQL = `SELECT ` + runColumns + `, begun, CASE WHEN prior_state = 'processing' THEN prior_owner END AS prior_owner, prior_expires FROM moved ORDER BY created_at, id`

// claimWritesSQL moves the runs of c (id, state, lease_owner, lease_expires_at, created_at),
// locked by the claim, to processing for owner $2 until $3 at $1, with their events; the
// attempts that a taken-over run's old owner left running are closed with the reason $4.
var claimWritesSQL = `
abandoned AS (UPDATE step_attempts SET outcome = 'abandoned', finished_at = $1,
	error = CASE WHEN c.lease_expires_at = ` + strconv.FormatInt(handedBack, 10) + ` THEN '` + abandonedHandedBack + `' ELSE $4 END || ' (' || c.lease_owner || ')'
	FROM c WHERE c.state = 'processing' AND step_attempts.run_id = c.id AND step_attempts.outcome = 'running'),
moved AS (UPDATE runs SET state = 'processing', updated_at = $1, lease_owner = $2, lease_expires_at = $3,
	next_attempt_at = CASE WHEN c.state = 'processing' THEN runs.next_attempt_at ELSE 0 END
	FROM c WHERE runs.id = c.id
	RETURNING ` + runsColumns + `, c.state AS prior_state, c.lease_owner AS prior_owner, c.lease_expires_at AS prior_expires,
	EXISTS (SELECT 1 FROM step_attempts WHERE step_attempts.run_id = runs.id OFFSET 0) AS begun),
events AS (INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at)
	SELECT id, prior_state, 'processing', CASE
		WHEN prior_state <> 'processing' THEN 'claimed by ' || $2
		ELSE 'taken over' || CASE WHEN prior_owner = '' THEN '' ELSE ' from ' || prior_owner END ||
			CASE WHEN prior_expires = ` + strconv.FormatInt(handedBack, 10) + ` THEN ' (handed back)' ELSE ' (lease expired)' END || ' by ' || $2 END, $2, $1
	FROM moved ORDER BY created_at, id)
`

// mayTakeSQL is the condition on a due run's pipeline: not switched off, and one of the
// pipelines given as the parameter pipelines when filtered.
func mayTakeSQL(filtered bool, pipelines string) string {
	c := ` AND pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled)`
	if filtered {
		c += ` AND pipeline = ANY(` + pipelines + `::text[])`
	}
	return c
}

// readsWindow says whether claimSQL reads each pipeline's queue as far as window (else it walks
// the queue in claim order; a filtered claim always does).
func readsWindow(window int, filtered bool) bool { return window > 0 && !filtered }

// movedOrZero selects runColumns from moved, each NOT NULL one as its zero value when there is
// no row (the type of each is read from runRow, which scans them).
func movedOrZero() string {
	cols := strings.Split(strings.Join(strings.Fields(runColumns), ""), ",")
	rt := reflect.TypeFor[runRow]()
	out := make([]string, len(cols))
	for i, c := range cols {
		switch rt.Field(i).Type.Kind() {
		case reflect.String:
			out[i] = `COALESCE(moved.` + c + `, '')`
		case reflect.Int64:
			out[i] = `COALESCE(moved.` + c + `, 0)`
		case reflect.Bool:
			out[i] = `COALESCE(moved.` + c + `, false)`
		default: // nullable already (sql.NullString)
			out[i] = `moved.` + c
		}
	}
	return strings.Join(out, ", ")
}

// dueBranchesSQL reads the runs a claim may take on PostgreSQL, as two branches to merge: the
// runs ready to start (runs_ready) and those whose lease ran out (runs_leases), each selecting
// cols and ending with tail (the claim's other conditions, its order, limit and lock); now is
// the placeholder of the claim's time.
func dueBranchesSQL(cols, now, tail string) string {
	return `SELECT * FROM (SELECT ` + cols + ` FROM runs
		WHERE ` + readySQL(now) + tail + `) ready
	UNION ALL
	SELECT * FROM (SELECT ` + cols + ` FROM runs
		WHERE ` + expiredSQL(now) + tail + `) expired`
}

// readySQL is the condition on a run ready to start at now: queued, or a retry that is due.
func readySQL(now string) string {
	return `(state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ` + now + `))`
}

// expiredSQL is the condition on a run whose lease ran out before now, for another worker to
// take over.
func expiredSQL(now string) string {
	return `state = 'processing' AND lease_expires_at < ` + now
}

// claimCandidates locks up to n due runs, oldest first.
func (s *Store) claimCandidates(ctx context.Context, tx *sqlx.Tx, now time.Time, f domain.ClaimFilter, n int) ([]claimCandidate, error) {
	// A capped claim, or one while a pipeline is switched off, reads only the pipelines it
	// may take runs of, each one's queue on its own: walking the whole queue passed every
	// queued run of the others (a backlog of 100,000: on SQLite 42 ms a claim behind a pipeline
	// at its cap, 24 ms behind one switched off, under the write lock; on PostgreSQL 434 ms and
	// 28-33 ms).
	if s.dialect == "postgres" {
		cands, ok, err := s.lockByPipeline(ctx, tx, now, f, n)
		if err != nil || ok {
			return cands, err
		}
	} else {
		room, ok, err := s.pipelinesToRead(ctx, tx, now, f.MaxPerPipeline)
		if err != nil {
			return nil, err
		}
		if ok {
			if len(f.Pipelines) > 0 {
				room = slices.DeleteFunc(room, func(p string) bool { return !slices.Contains(f.Pipelines, p) })
			}
			if len(room) == 0 {
				return nil, nil
			}
			f.Pipelines = room
		}
	}
	q, args := s.candidatesQuery(now, f, n)
	var cands []claimCandidate
	err := s.txSelect(ctx, tx, &cands, q, args...)
	return cands, err
}

// pipelinesToRead lists the pipelines of the ledger a claim may take runs of, switched on and,
// with a cap (limit > 0), with fewer than limit runs busy; they are found one by one in
// runs_pipeline_created (a seek per pipeline, not a read of the runs). ok is false when every
// pipeline may be read (no cap, no switch off: the queue is walked whole), or when there are
// more than maxPipelineBranches of them.
func (s *Store) pipelinesToRead(ctx context.Context, tx *sqlx.Tx, now time.Time, limit int) ([]string, bool, error) {
	if limit == 0 {
		var off int
		if err := s.txGet(ctx, tx, &off, switchesOffSQL, true); err != nil || off == 0 {
			return nil, false, err
		}
	}
	q := `WITH RECURSIVE p(name) AS (
			SELECT MIN(pipeline) FROM runs
			UNION ALL SELECT (SELECT MIN(pipeline) FROM runs WHERE pipeline > p.name) FROM p WHERE p.name IS NOT NULL)
		SELECT name FROM p WHERE name IS NOT NULL AND name NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled = ?)`
	args := []any{true}
	if limit > 0 {
		q += ` AND name NOT IN (SELECT pipeline FROM runs WHERE state = 'processing' AND lease_expires_at >= ? GROUP BY pipeline HAVING COUNT(*) >= ?)`
		args = append(args, ms(now), limit)
	}
	var names []string
	if err := tx.SelectContext(ctx, &names, q+` LIMIT ?`, append(args, maxPipelineBranches+1)...); err != nil {
		return nil, false, fmt.Errorf("pipelines to claim from: %w", err)
	}
	return names, len(names) <= maxPipelineBranches, nil
}

// switchesOffSQL counts the pipelines switched off (a SQLite claim's first question).
const switchesOffSQL = `SELECT COUNT(*) FROM pipeline_switches WHERE disabled = ?`

// maxPipelineBranches is the most pipelines of a worker's --pipelines that a SQLite claim reads
// one by one; past it, the claim walks the whole queue in order (SQLite allows 500 terms in a
// compound statement).
const maxPipelineBranches = 64

// queuedPipelinesSQL lists the pipelines with runs queued as queued(name), a NULL last: one
// seek a pipeline, the next name after the last one found, ordered as only runs_queued_pipeline
// gives it without a sort (MIN(pipeline) was read from runs_pipeline_created, passing every
// finished run of each pipeline).
const queuedPipelinesSQL = `WITH RECURSIVE queued(name) AS (
	(SELECT pipeline FROM runs WHERE state = 'queued' ORDER BY pipeline, created_at, id LIMIT 1)
	UNION ALL SELECT (SELECT pipeline FROM runs WHERE state = 'queued' AND pipeline > queued.name ORDER BY pipeline, created_at, id LIMIT 1)
	FROM queued WHERE queued.name IS NOT NULL)`

// switchedOffBacklog is how many queued runs of pipelines switched off make an unfiltered
// PostgreSQL claim read the other pipelines' queues one by one instead of walking the whole
// queue, when that read costs less (readByPipeline): the walk passes each such run at about
// 0.15 µs, and while a pipeline switched off held no runs, reading by pipeline whenever a
// switch was off halved a draining worker's rate.
const switchedOffBacklog = 5000

// switchedOffSQL weighs the two ways to claim, in one statement: $1 the queued runs of the
// pipelines switched off (what a walk passes), counted up to $1; the pipelines switched on with
// runs queued (each costs a read of up to a window of runs), up to $2; the retries due at $3
// (read whole, to be sorted), up to $1. Each is read in its own index: the switched-off queues
// in runs_queued_pipeline (the pipeline as a range as in duePerPipelineSQL; asked as `pipeline
// IN (...)` the planner read every queued run of the ledger, 21-28 ms with 100,000), the next
// name in the order only runs_queued_pipeline gives without a sort, the retries in
// runs_state_due.
const switchedOffSQL = queuedPipelinesSQL + `
SELECT
	(SELECT count(*) FROM (SELECT 1 FROM pipeline_switches off CROSS JOIN LATERAL (
		SELECT 1 FROM runs WHERE pipeline >= off.pipeline AND pipeline <= off.pipeline AND state = 'queued'
		ORDER BY pipeline, created_at, id LIMIT $1) q WHERE off.disabled LIMIT $1) backlog) AS backlog,
	(SELECT count(*) FROM (SELECT 1 FROM queued WHERE name IS NOT NULL
		AND name NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled) LIMIT $2) open) AS open,
	(SELECT count(*) FROM (SELECT 1 FROM runs WHERE state = 'failed_transient' AND next_attempt_at <= $3 LIMIT $1) due) AS retries`

// switchedOffWeights is what switchedOffSQL found.
type switchedOffWeights struct {
	Backlog int `db:"backlog"`
	Open    int `db:"open"`
	Retries int `db:"retries"`
}

// readByPipeline says whether reading each open pipeline's queue costs less than walking past
// the backlog: at least switchedOffBacklog runs switched off, at most maxOpenPipelines open
// pipelines, and their windows (at the largest claim) with the retries due under half the
// backlog.
func (w switchedOffWeights) readByPipeline() bool {
	return w.Backlog >= switchedOffBacklog && w.Open <= maxOpenPipelines &&
		w.Open*claimWindow(32)+w.Retries < w.Backlog/2
}

// maxOpenPipelines is the most pipelines with runs queued that an unfiltered claim reads one by
// one: each costs a read of up to a window of runs at every claim (a review measured 101,262 rows
// read by a claim with 1,000 of them).
const maxOpenPipelines = 64

// switchedOff says whether an unfiltered claim reads by pipeline (readByPipeline), as the
// ledger was when last asked, at most a second ago. Only the claim's path depends on it, not what
// a claim may take: every path skips the runs of a pipeline switched off in the statement that
// locks them.
func (s *Store) switchedOff(ctx context.Context) bool {
	c := &s.switches
	c.Lock()
	defer c.Unlock()
	if now := time.Now(); now.Sub(c.read) >= time.Second || now.Before(c.read) {
		var w switchedOffWeights
		if err := s.db.GetContext(ctx, &w, switchedOffSQL, 4*switchedOffBacklog, maxOpenPipelines+1, ms(s.now())); err != nil {
			return c.off // the claim that follows meets the same ledger, and says what failed
		}
		c.read, c.off = now, w.readByPipeline()
	}
	return c.off
}

// lockByPipeline locks up to n due runs, oldest first, for a capped claim on PostgreSQL (ok
// false: it did not, the claim walks the queue). It lists the pipelines with runs queued that the
// claim may take (switched on, below their cap, within --pipelines), one index seek each in
// runs_queued_pipeline, and reads each one's queue on its own, with the retries due and the
// expired leases of every pipeline it may take, as far as a window of runs, without locking
// them; then it locks the first n of the window that no other claim holds, in the same
// statement. Locking in each pipeline's read instead would hold up to n runs of every pipeline,
// which the claim does not take and a concurrent claim would pass over. The window is
// claimWindow(n): other claims hold the head of the queue while they commit, and a claim that
// read only n runs, then locked them in a statement of its own, lost that race to them round
// after round (a claim of 8 among four claimers came back empty with 240 runs queued). When the
// window held fewer than n free runs, the next round reads on past it. With more than
// maxOpenPipelines pipelines to read it leaves the claim to the walk.
func (s *Store) lockByPipeline(ctx context.Context, tx *sqlx.Tx, now time.Time, f domain.ClaimFilter, n int) ([]claimCandidate, bool, error) {
	atCap := []string{} // not nil: NULL would fail every `<> ALL`
	if f.MaxPerPipeline > 0 {
		// The runs in flight, at most every worker's slots: the cap is counted once, not
		// for every run read.
		if err := tx.SelectContext(ctx, &atCap, `SELECT pipeline FROM runs WHERE state = 'processing' AND lease_expires_at >= $1
			GROUP BY pipeline HAVING COUNT(*) >= $2`, ms(now), f.MaxPerPipeline); err != nil {
			return nil, false, err
		}
	}
	var only []string // NULL: every pipeline
	if len(f.Pipelines) > 0 {
		only = f.Pipelines
	}
	var names []string
	if err := tx.SelectContext(ctx, &names, queuedPipelinesSQL+`
SELECT name FROM queued WHERE name IS NOT NULL AND name NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled)
	AND name <> ALL($1::text[]) AND ($2::text[] IS NULL OR name = ANY($2::text[])) LIMIT $3`, atCap, only, maxOpenPipelines+1); err != nil {
		return nil, false, fmt.Errorf("pipelines to claim from: %w", err)
	}
	if len(names) > maxOpenPipelines {
		return nil, false, nil
	}
	const rounds = 8
	window := claimWindow(n)
	afterAt, afterID := int64(math.MinInt64), ""
	var locked []claimCandidate
	for range rounds {
		var rows []struct {
			ID       sql.NullString `db:"id"`
			State    sql.NullString `db:"state"`
			Owner    sql.NullString `db:"lease_owner"`
			Expires  sql.NullInt64  `db:"lease_expires_at"`
			Pipeline sql.NullString `db:"pipeline"`
			Seen     int            `db:"seen"`
			LastAt   sql.NullInt64  `db:"last_at"`
			LastID   sql.NullString `db:"last_id"`
		}
		if err := tx.SelectContext(ctx, &rows, lockByPipelineSQL, names, afterAt, afterID, window, ms(now), n-len(locked), atCap, only); err != nil {
			return nil, false, err
		}
		for _, r := range rows {
			if r.ID.Valid {
				locked = append(locked, claimCandidate{ID: r.ID.String, State: r.State.String, Owner: r.Owner.String, Expires: r.Expires.Int64, Pipeline: r.Pipeline.String})
			}
		}
		if len(locked) >= n || len(rows) == 0 || rows[0].Seen < window {
			break
		}
		afterAt, afterID = rows[0].LastAt.Int64, rows[0].LastID.String
	}
	return locked, true, nil
}

// lockByPipelineSQL reads the window of the first $4 due runs after ($2, $3) in claim order
// (the queues of the pipelines $1, the retries and expired leases of any pipeline switched on,
// not in $7 and, unless NULL, in $8), and locks up to $6 of them still due at $5 (lockDueSQL). It returns
// those, or one row of NULLs when none, each with the window's size and last run.
var lockByPipelineSQL = `WITH due AS MATERIALIZED (` + duePerPipelineSQL(`unnest($1::text[])`,
	`pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled) AND pipeline <> ALL($7::text[]) AND ($8::text[] IS NULL OR pipeline = ANY($8::text[]))`,
	`$5`, `($2, $3)`, `$4`) + `),
edge AS (SELECT (SELECT count(*) FROM due) AS seen, last.created_at AS last_at, last.id AS last_id
	FROM (SELECT 1) one LEFT JOIN (SELECT created_at, id FROM due ORDER BY created_at DESC, id DESC LIMIT 1) last ON true),
locked AS (` + lockDueSQL(`$5`, `$6`) + `)
SELECT l.id, l.state, l.lease_owner, l.lease_expires_at, l.pipeline, edge.seen, edge.last_at, edge.last_id
FROM edge LEFT JOIN locked l ON true ORDER BY l.created_at, l.id`

// claimWindow is how many due runs a claim of n reads ahead of the lock (duePerPipelineSQL):
// other claims hold the head of the queue while they commit, up to their own n each, and a
// claim that read only n runs came back empty round after round while hundreds were queued.
// A variable, so that a test can make it as small as n and read past its end.
var claimWindow = func(n int) int { return 4*n + 64 }

// duePerPipelineSQL reads, without locking them, the first `window` runs due at `now` after
// the key `after` ((created_at, id); empty for none), in claim order: the queued runs of the
// pipelines in `names` (a relation of one text column), each pipeline's in
// runs_queued_pipeline, and the retries and expired leases of the pipelines that pass `others`
// (a condition on pipeline), which are few, in their own indexes.
//
// The pipeline of a queue is given as a range, not an equality, and the order starts with it:
// given as `pipeline = p.name`, the planner took one pipeline for 1/n of the runs and walked
// runs_ready or runs_created in creation order instead, filtering, which past a backlog of
// 100,000 runs of another pipeline cost 12 ms a claim; ordered by the pipeline first, only
// runs_queued_pipeline gives the order without a sort, whatever the statistics say. The
// retries and expired leases are ordered by `created_at + 0` for the same reason the other way
// round: in creation order the planner walked runs_ready or runs_created past that backlog to
// find them (it takes a state and a time for independent), where runs_state_due and
// runs_leases hold just them, to be sorted.
func duePerPipelineSQL(names, others, now, after, window string) string {
	cursor := ""
	if after != "" {
		cursor = ` AND (created_at, id) > ` + after
	}
	return `SELECT id, created_at FROM (
	SELECT q.id, q.created_at FROM ` + names + ` AS p(name) CROSS JOIN LATERAL (
		SELECT id, created_at FROM runs WHERE pipeline >= p.name AND pipeline <= p.name AND state = 'queued'` + cursor + `
		ORDER BY pipeline, created_at, id LIMIT ` + window + `) q
	UNION ALL
	(SELECT id, created_at FROM runs WHERE state = 'failed_transient' AND next_attempt_at <= ` + now + ` AND ` + others + cursor + `
		ORDER BY created_at + 0, id LIMIT ` + window + `)
	UNION ALL
	(SELECT id, created_at FROM runs WHERE state = 'processing' AND lease_expires_at < ` + now + ` AND ` + others + cursor + `
		ORDER BY created_at + 0, id LIMIT ` + window + `)
	) d ORDER BY created_at, id LIMIT ` + window
}

// lockDueSQL locks, oldest first, up to `limit` of the runs of the CTE due that are still due
// at `now` and whose pipeline is not switched off, skipping those another claim holds. The
// limit stops the locking: it holds no run it does not return.
func lockDueSQL(now, limit string) string {
	// By id through the primary key: given as `id IN (SELECT id FROM due)` the planner, without
	// statistics, read every queued run by state and hashed them against the window (52 ms).
	return `SELECT id, state, lease_owner, lease_expires_at, pipeline, created_at FROM runs
	WHERE id = ANY (ARRAY(SELECT id FROM due))
	AND (state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ` + now + `) OR (state = 'processing' AND lease_expires_at < ` + now + `))
	AND pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled)
	ORDER BY created_at, id LIMIT ` + limit + ` FOR UPDATE SKIP LOCKED`
}

// candidatesQuery is the statement of claimCandidates and its arguments.
func (s *Store) candidatesQuery(now time.Time, f domain.ClaimFilter, n int) (string, []any) {
	// What every candidate must pass besides being due, whichever state it is due from.
	rest := ` AND pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled = ?)`
	restArgs := []any{true}
	if len(f.Pipelines) > 0 {
		rest += ` AND pipeline IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Pipelines)), ", ") + `)`
		for _, p := range f.Pipelines {
			restArgs = append(restArgs, p)
		}
	}
	if f.MaxPerPipeline > 0 {
		// Pipelines already at their cap are skipped here; withinCaps admits the rest.
		// "Fewer than the cap are busy" is "there is no cap-th busy run": the count stops at
		// the cap instead of reading every busy run of the pipeline for every candidate, and
		// the order by created_at makes it walk runs_window rather than scan the table (a
		// claim of 16 behind 20,000 busy runs of a capped pipeline took 29.5 s counting,
		// 72 ms so).
		if s.dialect == "postgres" {
			rest += ` AND NOT EXISTS (SELECT 1 FROM runs busy WHERE busy.pipeline = runs.pipeline AND busy.state = 'processing' AND busy.lease_expires_at >= ?
				ORDER BY busy.created_at LIMIT 1 OFFSET ?)`
			restArgs = append(restArgs, ms(now), f.MaxPerPipeline-1)
		} else {
			// On SQLite the pipelines at their cap are counted once, from the busy runs (one
			// machine's slots), not once per queued run walked: a backlog of 100,000 runs of
			// a pipeline at its cap cost 324 ms a claim, under the write lock.
			rest += ` AND pipeline NOT IN (SELECT pipeline FROM runs WHERE state = 'processing' AND lease_expires_at >= ?
				GROUP BY pipeline HAVING COUNT(*) >= ?)`
			restArgs = append(restArgs, ms(now), f.MaxPerPipeline)
		}
	}
	// Run ids sort by creation time too: they break ties within a millisecond, so that the
	// order is the same on every ledger and every call. On PostgreSQL the limit is a parameter,
	// so that the statement is prepared once whatever the number of free slots; on SQLite it is
	// in the text (below).
	var q string
	var args []any
	if s.dialect == "postgres" {
		// As claimSQL: the runs ready to start and the runs whose lease ran out, each read in
		// its own index (runs_ready, runs_leases) and locked there, the first n of both taken.
		q = `SELECT id, state, lease_owner, lease_expires_at, pipeline FROM (` +
			dueBranchesSQL(`id, state, lease_owner, lease_expires_at, pipeline, created_at`, `?`,
				rest+` ORDER BY created_at, id LIMIT ? FOR UPDATE SKIP LOCKED`) + `) due ORDER BY created_at, id LIMIT ?`
		args = append(append([]any{ms(now)}, restArgs...), n)
		args = append(append(append(args, ms(now)), restArgs...), n)
		args = append(args, n)
	} else {
		// SQLite cannot walk one index for the three states in creation order: given them
		// as one condition, it read every due run and sorted them all at each claim (44 ms
		// with 100,000 queued). Each state is read in order on its own, at most n runs each,
		// and the merge keeps the first n: the queued ones walk runs_queued, the other two are
		// few (retries due, leases expired) and found through runs_state_due. A worker
		// limited to some pipelines reads each one's queued runs from runs_window instead:
		// walking runs_queued would pass every queued run of the others (16 ms a claim behind
		// 100,000 of another pipeline's).
		//
		// The limit is written in the text, one statement per size (prepareClaim prepares them
		// as claims of each size come): SQLite's planner reads the value bound to a bare LIMIT
		// ?, and compiles the statement again whenever another value is bound, at most claims
		// (a seventh of a claim's time in a worker's drain). Hiding the value instead, as ? +
		// 0, changed the plans on a ledger with ANALYZE's samples. The times stay bound: on
		// such a ledger the planner reads them too, and compiles the walk at every claim, so
		// that its plan follows the samples (a storm of retries walked in order, not sorted).
		limit := strconv.Itoa(n)
		var branches []string
		branch := func(cond, index string, leading ...any) {
			branches = append(branches, `SELECT * FROM (SELECT id, state, lease_owner, lease_expires_at, pipeline, created_at FROM runs `+
				index+` WHERE `+cond+rest+` ORDER BY created_at, id LIMIT `+limit+`)`)
			args = append(append(args, leading...), restArgs...)
		}
		if len(f.Pipelines) == 0 || len(f.Pipelines) > maxPipelineBranches {
			branch(`state = 'queued'`, `INDEXED BY runs_queued`)
		} else {
			seen := make(map[string]bool, len(f.Pipelines))
			for _, p := range f.Pipelines {
				if !seen[p] { // a pipeline named twice would be read twice
					seen[p] = true
					branch(`pipeline = ? AND state = 'queued'`, `INDEXED BY runs_window`, p)
				}
			}
		}
		branch(`state = 'failed_transient' AND next_attempt_at <= ?`, ``, ms(now))
		branch(`state = 'processing' AND lease_expires_at < ?`, ``, ms(now))
		q = `SELECT id, state, lease_owner, lease_expires_at, pipeline FROM (` + strings.Join(branches, ` UNION ALL `) + `) ORDER BY created_at, id LIMIT ` + limit
	}
	return s.db.Rebind(q), args
}

// withinCaps keeps, per pipeline and in order, only as many candidates as its cap leaves room
// for. On PostgreSQL two workers may lock runs of one pipeline at once: each recounts under a
// transaction-scoped advisory lock per pipeline, so that the cap holds across machines. The
// locks are taken in name order, so two claims never wait for each other in a cycle.
func (s *Store) withinCaps(ctx context.Context, tx *sqlx.Tx, now time.Time, limit int, cands []claimCandidate) ([]claimCandidate, error) {
	var pipelines, ids []string
	seen := map[string]bool{}
	for _, c := range cands {
		ids = append(ids, c.ID)
		if !seen[c.Pipeline] {
			seen[c.Pipeline] = true
			pipelines = append(pipelines, c.Pipeline)
		}
	}
	sort.Strings(pipelines)
	if s.dialect == "postgres" {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext(p)) FROM (SELECT unnest($1::text[]) AS p ORDER BY 1) locks`, pipelines); err != nil {
			return nil, err
		}
	}
	// Only the candidates' pipelines are counted: they had fewer busy runs than the cap a
	// moment ago, where the others may have thousands.
	q, args := s.idList(`SELECT pipeline, COUNT(*) AS n FROM runs WHERE state = 'processing' AND lease_expires_at >= ? AND id %s AND pipeline IN (`+
		strings.TrimSuffix(strings.Repeat("?, ", len(pipelines)), ", ")+`) GROUP BY pipeline`, ids, true, ms(now))
	for _, p := range pipelines {
		args = append(args, p)
	}
	var counts []struct {
		Pipeline string `db:"pipeline"`
		N        int    `db:"n"`
	}
	if err := tx.SelectContext(ctx, &counts, q, args...); err != nil {
		return nil, err
	}
	busy := map[string]int{}
	for _, c := range counts {
		busy[c.Pipeline] = c.N
	}
	kept := cands[:0]
	for _, c := range cands {
		if busy[c.Pipeline] < limit {
			busy[c.Pipeline]++
			kept = append(kept, c)
		}
	}
	return kept, nil
}

// inList fills the %s of query, which follows a column, with a test that the column is one
// of ids (negated: none of them): one array parameter on PostgreSQL, one placeholder per id on
// SQLite, which has no arrays. It returns the query rebound, and args: the leading arguments,
// then the ids.
func (s *Store) inList(query string, ids []string, leading ...any) (string, []any) {
	return s.idList(query, ids, false, leading...)
}

func (s *Store) idList(query string, ids []string, not bool, leading ...any) (string, []any) {
	args := append([]any(nil), leading...)
	var test string
	switch {
	case s.dialect == "postgres" && not:
		test, args = "<> ALL(?::text[])", append(args, ids)
	case s.dialect == "postgres":
		test, args = "= ANY(?::text[])", append(args, ids)
	default:
		// Each id is written ? || '', an expression whose value SQLite's planner cannot read:
		// on a ledger with ANALYZE's samples it read the bound ids, and then compiled the
		// prepared statement (a claim's update) again at every claim. The primary key finds
		// each one all the same.
		test = "IN (" + strings.TrimSuffix(strings.Repeat("? || '', ", len(ids)), ", ") + ")"
		if not {
			test = "NOT " + test
		}
		for _, id := range ids {
			args = append(args, id)
		}
	}
	return s.db.Rebind(fmt.Sprintf(query, test)), args
}

// collect runs a statement that returns run rows and keeps them by id.
// claimBegun is returned with a claimed run's columns: whether it has attempts already, read
// by the claim's UPDATE itself rather than by a statement (a round trip) of its own.
const claimBegun = `, EXISTS (SELECT 1 FROM step_attempts WHERE step_attempts.run_id = runs.id) AS begun`

// claimedRow is a run as a claim's UPDATE returns it.
type claimedRow struct {
	runRow
	Begun bool `db:"begun"`
}

func (s *Store) collect(ctx context.Context, tx *sqlx.Tx, into map[string]claimedRow, q string, args []any) error {
	var rows []claimedRow
	if err := s.txSelect(ctx, tx, &rows, q, args...); err != nil {
		return err
	}
	for _, r := range rows {
		into[r.ID] = r
	}
	return nil
}

// PausedRuns counts the runs waiting for a person (needs_review) and for a signal
// (waiting_external); states with none are absent from the map.
func (s *Store) PausedRuns(ctx context.Context) (map[domain.RunState]int, error) {
	var rows []struct {
		State string `db:"state"`
		N     int    `db:"n"`
	}
	err := s.db.SelectContext(ctx, &rows, `SELECT state, COUNT(*) AS n FROM runs WHERE state IN ('needs_review', 'waiting_external') GROUP BY state`)
	if err != nil {
		return nil, err
	}
	out := make(map[domain.RunState]int, len(rows))
	for _, r := range rows {
		out[domain.RunState(r.State)] = r.N
	}
	return out, nil
}

// QueueDepth counts runs waiting for a worker: queued, and retries already due.
func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, s.db.Rebind(`SELECT COUNT(*) FROM runs WHERE state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ?)`), ms(s.now()))
	return n, err
}
