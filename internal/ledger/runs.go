package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

const runColumns = `id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, spec_path,
	pipectl_version, state, lease_owner, lease_expires_at, next_attempt_at, replay_of, dry_run,
	error_class, error, failed_step, created_at, updated_at, finished_at, step_key_base`

type runRow struct {
	ID             string         `db:"id"`
	Pipeline       string         `db:"pipeline"`
	IdempotencyKey string         `db:"idempotency_key"`
	InputHash      string         `db:"input_hash"`
	Input          string         `db:"input"`
	SpecText       string         `db:"spec_text"`
	SpecHash       string         `db:"spec_hash"`
	SpecPath       string         `db:"spec_path"`
	Version        string         `db:"pipectl_version"`
	State          string         `db:"state"`
	LeaseOwner     string         `db:"lease_owner"`
	LeaseExpires   int64          `db:"lease_expires_at"`
	NextAttemptAt  int64          `db:"next_attempt_at"`
	ReplayOf       sql.NullString `db:"replay_of"`
	DryRun         bool           `db:"dry_run"`
	ErrorClass     string         `db:"error_class"`
	Error          string         `db:"error"`
	FailedStep     string         `db:"failed_step"`
	CreatedAt      int64          `db:"created_at"`
	UpdatedAt      int64          `db:"updated_at"`
	FinishedAt     int64          `db:"finished_at"`
	StepKeyBase    string         `db:"step_key_base"`
}

// dest is where each of runColumns scans to, in their order: a claim scans its rows without
// sqlx's reflection (a fifth of what claiming cost a busy worker).
func (r *runRow) dest() []any {
	return []any{&r.ID, &r.Pipeline, &r.IdempotencyKey, &r.InputHash, &r.Input, &r.SpecText, &r.SpecHash, &r.SpecPath,
		&r.Version, &r.State, &r.LeaseOwner, &r.LeaseExpires, &r.NextAttemptAt, &r.ReplayOf, &r.DryRun,
		&r.ErrorClass, &r.Error, &r.FailedStep, &r.CreatedAt, &r.UpdatedAt, &r.FinishedAt, &r.StepKeyBase}
}

func (r runRow) domain() *domain.Run {
	return &domain.Run{
		ID: r.ID, Pipeline: r.Pipeline, IdempotencyKey: r.IdempotencyKey, InputHash: r.InputHash,
		Input: []byte(r.Input), SpecText: r.SpecText, SpecHash: r.SpecHash, SpecPath: r.SpecPath,
		Version: r.Version, State: domain.RunState(r.State), LeaseOwner: r.LeaseOwner,
		LeaseExpires: fromMS(r.LeaseExpires), NextAttemptAt: fromMS(r.NextAttemptAt),
		ReplayOf: r.ReplayOf.String, DryRun: r.DryRun, ErrorClass: domain.ErrorClass(r.ErrorClass),
		Error: r.Error, FailedStep: r.FailedStep, CreatedAt: fromMS(r.CreatedAt),
		UpdatedAt: fromMS(r.UpdatedAt), FinishedAt: fromMS(r.FinishedAt), StepKeyBase: r.StepKeyBase,
	}
}

// CreateRun inserts a queued run with its creation event. When the pipeline already has a run
// with the same idempotency key, nothing is written and that run is returned with
// created=false. With a claim, the run also moves to processing in the same commit.
func (s *Store) CreateRun(ctx context.Context, r *domain.Run, actor string, claim *domain.Claim) (*domain.Run, bool, error) {
	now := s.now()
	created := false
	var out *domain.Run
	state, owner, until := domain.StateQueued, "", time.Time{}
	if claim != nil {
		state, owner, until = domain.StateProcessing, claim.Owner, claim.LeaseUntil
	}
	err := s.runTx(ctx, r.ID, func(tx *sqlx.Tx) error {
		// A group commit may run this again: start afresh.
		created, out = false, nil
		var replayOf any
		if r.ReplayOf != "" {
			replayOf = r.ReplayOf
		}
		base := r.StepKeyBase
		if base == "" {
			base = r.IdempotencyKey
		}
		res, err := s.txExec(ctx, tx, insertRunSQL, r.ID, r.Pipeline, r.IdempotencyKey, r.InputHash, string(r.Input),
			r.SpecText, r.SpecHash, r.SpecPath, r.Version, string(state), owner, ms(until), replayOf, r.DryRun, ms(now), ms(now), base)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			out, err = s.findRun(ctx, tx, r.Pipeline, r.IdempotencyKey)
			return err
		}
		created = true
		// A claimed run is inserted in processing directly; the commit still records both
		// transitions, so the history reads queued -> processing like any other run's. Both
		// events go in one statement, in that order.
		if claim != nil {
			_, err := s.txExec(ctx, tx, insertCreatedClaimedSQL, r.ID, "", string(domain.StateQueued), "created", actor, ms(now),
				r.ID, string(domain.StateQueued), string(domain.StateProcessing), "claimed by "+claim.Owner, actor, ms(now))
			return err
		}
		if err := s.insertEvent(ctx, tx, r.ID, "", domain.StateQueued, "created", actor, now); err != nil {
			return err
		}
		if s.dialect == "postgres" {
			// Listening workers wake up at once; the notification is sent at commit.
			_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, r.ID)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create run: %w", err)
	}
	if created {
		c := *r
		c.State, c.LeaseOwner, c.LeaseExpires, c.CreatedAt, c.UpdatedAt = state, owner, until, now, now
		if c.StepKeyBase == "" {
			c.StepKeyBase = c.IdempotencyKey
		}
		out = &c
	}
	return out, created, nil
}

const insertRunSQL = `INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, spec_path,
	pipectl_version, state, lease_owner, lease_expires_at, replay_of, dry_run, created_at, updated_at, step_key_base)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (pipeline, idempotency_key) DO NOTHING`

// Transition moves a run to ch.To when its current state allows it, recording the event in the
// same commit. It fails with domain.ErrStateConflict otherwise.
func (s *Store) Transition(ctx context.Context, runID string, ch domain.Change) error {
	ch = storableText(ch)
	return s.runTx(ctx, runID, func(tx *sqlx.Tx) error { return s.transitionTx(ctx, tx, runID, ch) })
}

func (s *Store) transitionTx(ctx context.Context, tx *sqlx.Tx, runID string, ch domain.Change) error {
	var cur struct {
		State string `db:"state"`
		Owner string `db:"lease_owner"`
	}
	if err := s.txGet(ctx, tx, &cur, selectStateSQL+s.forUpdate(), runID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, domain.ErrNotFound)
		}
		return err
	}
	return s.applyTransitionTx(ctx, tx, runID, domain.RunState(cur.State), cur.Owner, ch)
}

// applyTransitionTx is transitionTx once the run's state and lease owner were read (and locked)
// in tx.
func (s *Store) applyTransitionTx(ctx context.Context, tx *sqlx.Tx, runID string, from domain.RunState, owner string, ch domain.Change) error {
	now := s.now()
	args, err := transitionArgs(runID, from, owner, ch, now)
	if err != nil {
		return err
	}
	if s.dialect == "postgres" && ch.To != domain.StateQueued {
		// One round trip: the event is inserted for the row the update moved, if it moved.
		res, err := tx.ExecContext(ctx, s.db.Rebind(`WITH moved AS (`+transitionSQL(ch.To)+` RETURNING id)
			INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) SELECT id, ?, ?, ?, ?, ? FROM moved`),
			append(args, string(from), string(ch.To), ch.Reason, ch.Actor, ms(now))...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("run %s changed under us: %w", runID, domain.ErrStateConflict)
		}
		return nil
	}
	res, err := s.txExec(ctx, tx, transitionSQL(ch.To), args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("run %s changed under us: %w", runID, domain.ErrStateConflict)
	}
	if ch.To == domain.StateQueued && s.dialect == "postgres" {
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, runID); err != nil {
			return err
		}
	}
	return s.insertEvent(ctx, tx, runID, from, ch.To, ch.Reason, ch.Actor, now)
}

// transitionArgs checks that a run read in state from (held by owner) may make the change
// ch, and returns the arguments of transitionSQL(ch.To) for it.
func transitionArgs(runID string, from domain.RunState, owner string, ch domain.Change, now time.Time) ([]any, error) {
	if !domain.CanTransition(from, ch.To) {
		return nil, fmt.Errorf("run %s is %s; it cannot move to %s: %w", runID, from, ch.To, domain.ErrStateConflict)
	}
	if from == domain.StateProcessing && ch.Owner != "" && owner != ch.Owner {
		return nil, fmt.Errorf("run %s is owned by %s: %w", runID, owner, domain.ErrLeaseLost)
	}
	args := []any{string(ch.To), ms(now)}
	switch ch.To {
	case domain.StateProcessing:
		args = append(args, ch.LeaseOwner, ms(ch.LeaseUntil))
	case domain.StateQueued:
	default:
		args = append(args, ms(ch.NextAttemptAt), string(ch.ErrorClass), ch.Error, ch.FailedStep)
		if ch.To == domain.StateSucceeded || ch.To == domain.StateFailedPermanent {
			args = append(args, ms(now))
		}
	}
	args = append(args, runID)
	for _, src := range domain.SourcesOf(ch.To) {
		args = append(args, string(src))
	}
	return append(args, string(from)), nil
}

const selectStateSQL = `SELECT state, lease_owner FROM runs WHERE id = ?`

const insertEventSQL = `INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) VALUES (?, ?, ?, ?, ?, ?)`

// insertCreatedClaimedSQL records a run's creation and its claim, in that order (consecutive ids).
const insertCreatedClaimedSQL = `INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)`

// transitionSQL is the conditional update that moves a run to a state. Its WHERE clause
// repeats the state machine inside the database: a transition it forbids cannot happen even
// if two writers race. Arguments: the SET values, the run id, the legal source states, and
// the state the caller read.
func transitionSQL(to domain.RunState) string {
	if q, ok := transitionSQLs()[to]; ok {
		return q
	}
	return buildTransitionSQL(to)
}

// transitionSQLs holds transitionSQL's statement of every state, built on first use: a run's
// every transition looks its statement up instead of building the text again.
var transitionSQLs = sync.OnceValue(func() map[domain.RunState]string {
	out := make(map[domain.RunState]string, len(domain.RunStates))
	for _, to := range domain.RunStates {
		out[to] = buildTransitionSQL(to)
	}
	return out
})

func buildTransitionSQL(to domain.RunState) string {
	set := []string{"state = ?", "updated_at = ?"}
	switch to {
	case domain.StateProcessing:
		set = append(set, "lease_owner = ?", "lease_expires_at = ?", "next_attempt_at = 0")
	case domain.StateQueued:
		set = append(set, "lease_owner = ''", "lease_expires_at = 0", "next_attempt_at = 0", "error_class = ''", "error = ''", "failed_step = ''", "finished_at = 0")
	default:
		set = append(set, "lease_owner = ''", "lease_expires_at = 0", "next_attempt_at = ?", "error_class = ?", "error = ?", "failed_step = ?")
		if to == domain.StateSucceeded || to == domain.StateFailedPermanent {
			set = append(set, "finished_at = ?")
		}
	}
	sources := domain.SourcesOf(to)
	placeholders := strings.TrimSuffix(strings.Repeat("?, ", len(sources)), ", ")
	if placeholders == "" {
		placeholders = "NULL"
	}
	return `UPDATE runs SET ` + strings.Join(set, ", ") + ` WHERE id = ? AND state IN (` + placeholders + `) AND state = ?`
}

func (s *Store) forUpdate() string {
	if s.dialect == "postgres" {
		return " FOR UPDATE"
	}
	return "" // SQLite write transactions already hold the database lock (BEGIN IMMEDIATE)
}

func (s *Store) insertEvent(ctx context.Context, tx *sqlx.Tx, runID string, from, to domain.RunState, reason, actor string, at time.Time) error {
	_, err := s.txExec(ctx, tx, insertEventSQL, runID, string(from), string(to), reason, actor, ms(at))
	return err
}

// RenewLease extends the lease of a run the owner still holds. On PostgreSQL it is not a HOT
// update: runs_leases holds lease_expires_at (see migration 0017 for why).
func (s *Store) RenewLease(ctx context.Context, runID, owner string, until time.Time) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND state = 'processing'`), ms(until), runID, owner)
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("run %s: %w", runID, domain.ErrLeaseLost)
	}
	return nil
}

// ReleaseLease lets a process that stops early hand the run back at once: the next process
// treats the lease as expired.
func (s *Store) ReleaseLease(ctx context.Context, runID, owner string) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND state = 'processing'`), handedBack, runID, owner)
	return err
}

// HandBack is ReleaseLease for a run its owner claimed and did not start, with the reason in
// the run's events, so that the takeover that follows does not read as the end of a dead
// process. A run the owner no longer holds is left alone, and nothing is recorded.
func (s *Store) HandBack(ctx context.Context, runID, owner, reason string) error {
	return s.directTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE runs SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND state = 'processing'`), handedBack, ms(s.now()), runID, owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(insertEventSQL), runID, string(domain.StateProcessing), string(domain.StateProcessing), reason, owner, ms(s.now()))
		return err
	})
}

// TakeOver moves the lease of a processing run from a previous owner that is gone to a new one.
// The run stays in processing; the takeover is recorded as an event, and attempts the previous
// owner left running are marked abandoned, all in one commit.
func (s *Store) TakeOver(ctx context.Context, runID, previousOwner, owner string, until time.Time, reason, actor string) error {
	return s.runTx(ctx, runID, func(tx *sqlx.Tx) error {
		return s.takeOverTx(ctx, tx, runID, previousOwner, owner, until, reason, actor, "the process running this attempt died")
	})
}

// takeOverTx moves a processing run's lease from previousOwner to owner, marks the attempts
// the previous owner left running abandoned (why says why), and records the event. It fails
// with domain.ErrLeaseLost when the lease moved meanwhile.
func (s *Store) takeOverTx(ctx context.Context, tx *sqlx.Tx, runID, previousOwner, owner string, until time.Time, reason, actor, why string) error {
	now := s.now()
	res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE runs SET lease_owner = ?, lease_expires_at = ?, updated_at = ? WHERE id = ? AND state = 'processing' AND lease_owner = ?`),
		owner, ms(until), ms(now), runID, previousOwner)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("run %s: %w", runID, domain.ErrLeaseLost)
	}
	if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE step_attempts SET outcome = 'abandoned', finished_at = ?, error = ? WHERE run_id = ? AND outcome = 'running'`),
		ms(now), why+" ("+previousOwner+")", runID); err != nil {
		return err
	}
	return s.insertEvent(ctx, tx, runID, domain.StateProcessing, domain.StateProcessing, reason, actor, now)
}

// GetRun returns a run by id, or by a unique prefix of its id.
func (s *Store) GetRun(ctx context.Context, id string) (*domain.Run, error) {
	r, err := s.getRun(ctx, s.db, id)
	if !errors.Is(err, domain.ErrNotFound) {
		return r, err
	}
	if len(id) < MinRunIDPrefix {
		return nil, fmt.Errorf("run %s: %w (a run id prefix needs at least %d characters; %q is too short)", id, domain.ErrNotFound, MinRunIDPrefix, id)
	}
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, s.db.Rebind(`SELECT id FROM runs WHERE id LIKE ? ORDER BY id LIMIT 2`), escapeLike(id)+"%"); err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return nil, fmt.Errorf("run %s: %w", id, domain.ErrNotFound)
	case 1:
		return s.getRun(ctx, s.db, ids[0])
	}
	return nil, fmt.Errorf("run id prefix %s is ambiguous (%s, %s, ...); give more characters: %w", id, ids[0], ids[1], domain.ErrAmbiguous)
}

// MinRunIDPrefix is the shortest run id prefix GetRun looks up. A run id's first ten characters
// are its creation time in milliseconds, so eight of them already narrow it to about a second;
// a shorter prefix would name every run of the same minutes or days.
const MinRunIDPrefix = 8

func escapeLike(s string) string {
	return strings.NewReplacer("%", "", "_", "").Replace(s)
}

func (s *Store) getRun(ctx context.Context, q sqlx.QueryerContext, id string) (*domain.Run, error) {
	var row runRow
	if err := sqlx.GetContext(ctx, q, &row, s.db.Rebind(`SELECT `+runColumns+` FROM runs WHERE id = ?`), id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("run %s: %w", id, domain.ErrNotFound)
		}
		return nil, err
	}
	return row.domain(), nil
}

// FindRun returns the run of a pipeline with an idempotency key.
func (s *Store) FindRun(ctx context.Context, pipeline, key string) (*domain.Run, error) {
	return s.findRun(ctx, s.db, pipeline, key)
}

func (s *Store) findRun(ctx context.Context, q sqlx.QueryerContext, pipeline, key string) (*domain.Run, error) {
	var row runRow
	if err := sqlx.GetContext(ctx, q, &row, s.db.Rebind(`SELECT `+runColumns+` FROM runs WHERE pipeline = ? AND idempotency_key = ?`), pipeline, key); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("run of %s with key %s: %w", pipeline, key, domain.ErrNotFound)
		}
		return nil, err
	}
	return row.domain(), nil
}

// RunFilter narrows ListRuns.
type RunFilter struct {
	State    domain.RunState
	Pipeline string
	Limit    int
	// Since keeps runs created at or after it.
	Since time.Time
	// After is a page cursor: only runs listed after this one (older, or as old with a
	// smaller id), so pages stay stable while new runs arrive.
	After *Cursor
}

// Cursor is the position of a run in the newest-first order.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// ListRuns returns runs, newest first.
func (s *Store) ListRuns(ctx context.Context, f RunFilter) ([]*domain.Run, error) {
	q := `SELECT ` + runColumns + ` FROM runs WHERE 1 = 1`
	var args []any
	if f.State != "" {
		q += ` AND state = ?`
		args = append(args, string(f.State))
	}
	if f.Pipeline != "" {
		q += ` AND pipeline = ?`
		args = append(args, f.Pipeline)
	}
	if !f.Since.IsZero() {
		q += ` AND created_at >= ?`
		args = append(args, ms(f.Since))
	}
	if c := f.After; c != nil {
		q += ` AND (created_at < ? OR (created_at = ? AND id < ?))`
		args = append(args, ms(c.CreatedAt), ms(c.CreatedAt), c.ID)
	}
	q += ` ORDER BY created_at DESC, id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	var rows []runRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, err
	}
	out := make([]*domain.Run, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out, nil
}

// Events returns a run's transitions in order.
func (s *Store) Events(ctx context.Context, runID string) ([]domain.Event, error) {
	var rows []struct {
		ID     int64  `db:"id"`
		RunID  string `db:"run_id"`
		From   string `db:"from_state"`
		To     string `db:"to_state"`
		Reason string `db:"reason"`
		Actor  string `db:"actor"`
		At     int64  `db:"at"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT id, run_id, from_state, to_state, reason, actor, at FROM run_events WHERE run_id = ? ORDER BY id`), runID); err != nil {
		return nil, err
	}
	out := make([]domain.Event, len(rows))
	for i, r := range rows {
		out[i] = domain.Event{ID: r.ID, RunID: r.RunID, From: domain.RunState(r.From), To: domain.RunState(r.To), Reason: r.Reason, Actor: r.Actor, At: fromMS(r.At)}
	}
	return out, nil
}

// AddNote records an operator's note on a run; its text is made storable (a NUL in a note sent
// to the API was a server error on PostgreSQL).
func (s *Store) AddNote(ctx context.Context, runID, actor, text string) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO notes (run_id, actor, text, at) VALUES (?, ?, ?, ?)`), runID, storable(actor), storable(text), ms(s.now()))
	return err
}

// Notes returns a run's notes in order.
func (s *Store) Notes(ctx context.Context, runID string) ([]domain.Note, error) {
	var rows []struct {
		ID    int64  `db:"id"`
		RunID string `db:"run_id"`
		Actor string `db:"actor"`
		Text  string `db:"text"`
		At    int64  `db:"at"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT id, run_id, actor, text, at FROM notes WHERE run_id = ? ORDER BY id`), runID); err != nil {
		return nil, err
	}
	out := make([]domain.Note, len(rows))
	for i, r := range rows {
		out[i] = domain.Note{ID: r.ID, RunID: r.RunID, Actor: r.Actor, Text: r.Text, At: fromMS(r.At)}
	}
	return out, nil
}

// LatestKey returns the greatest idempotency key of a pipeline's runs that starts with prefix,
// or "" when there is none. Schedules find their last slot this way.
func (s *Store) LatestKey(ctx context.Context, pipeline, prefix string) (string, error) {
	var keys []string
	err := s.db.SelectContext(ctx, &keys, s.db.Rebind(`SELECT idempotency_key FROM runs WHERE pipeline = ? AND idempotency_key LIKE ?
		ORDER BY idempotency_key DESC LIMIT 1`), pipeline, escapeLike(prefix)+"%")
	if err != nil || len(keys) == 0 {
		return "", err
	}
	return keys[0], nil
}

// Ping reports whether the ledger answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// RebindSpec binds a run to another spec, provided it is still bound to fromHash (two
// processes rebinding at once cannot both win), and records the event with the reason.
func (s *Store) RebindSpec(ctx context.Context, runID, fromHash string, spec domain.Run, reason, actor string) error {
	return s.runTx(ctx, runID, func(tx *sqlx.Tx) error {
		var state domain.RunState
		if err := tx.GetContext(ctx, &state, s.db.Rebind(`SELECT state FROM runs WHERE id = ? AND spec_hash = ?`), runID, fromHash); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("run %s is no longer bound to spec %s: %w", runID, fromHash, domain.ErrStateConflict)
			}
			return err
		}
		now := s.now()
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE runs SET spec_text = ?, spec_hash = ?, spec_path = ?, updated_at = ? WHERE id = ? AND spec_hash = ?`),
			spec.SpecText, spec.SpecHash, spec.SpecPath, ms(now), runID, fromHash); err != nil {
			return err
		}
		return s.insertEvent(ctx, tx, runID, state, state, reason, actor, now)
	})
}
