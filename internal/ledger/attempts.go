package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

type attemptRow struct {
	ID         int64  `db:"id"`
	RunID      string `db:"run_id"`
	StepID     string `db:"step_id"`
	ItemIndex  int    `db:"item_index"`
	Attempt    int    `db:"attempt"`
	StepKey    string `db:"step_key"`
	StartedAt  int64  `db:"started_at"`
	FinishedAt int64  `db:"finished_at"`
	DurationMS int64  `db:"duration_ms"`
	Outcome    string `db:"outcome"`
	ErrorClass string `db:"error_class"`
	Error      string `db:"error"`
	Request    string `db:"request"`
	Response   string `db:"response"`
	Output     string `db:"output"`
}

func toRow(a *domain.Attempt) attemptRow {
	return attemptRow{
		ID: a.ID, RunID: a.RunID, StepID: a.StepID, ItemIndex: a.ItemIndex, Attempt: a.Attempt,
		StepKey: a.StepKey, StartedAt: ms(a.StartedAt), FinishedAt: ms(a.FinishedAt), DurationMS: a.DurationMS,
		Outcome: a.Outcome, ErrorClass: string(a.ErrorClass), Error: storable(a.Error),
		Request: storable(string(a.Request)), Response: storable(string(a.Response)), Output: storable(string(a.Output)),
	}
}

// storable returns s as a text every ledger can hold: PostgreSQL refuses a NUL character, and
// bytes that are not UTF-8, in a text column, and fails the whole statement. Such text comes
// from outside (an error quoting an input key, a response body), and a run whose end could not
// be written would be stuck, so each of them is written as U+FFFD instead.
func storable(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// storableChange is ch with its texts made storable: ch itself when they are (as almost
// always), else a copy.
func storableChange(ch *domain.Change) *domain.Change {
	if ch == nil || storableText(*ch) == *ch {
		return ch
	}
	c := storableText(*ch)
	return &c
}

// storableText is ch with its texts made storable.
func storableText(ch domain.Change) domain.Change {
	ch.Reason, ch.Error, ch.FailedStep = storable(ch.Reason), storable(ch.Error), storable(ch.FailedStep)
	return ch
}

func (r attemptRow) domain() domain.Attempt {
	raw := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	return domain.Attempt{
		ID: r.ID, RunID: r.RunID, StepID: r.StepID, ItemIndex: r.ItemIndex, Attempt: r.Attempt,
		StepKey: r.StepKey, StartedAt: fromMS(r.StartedAt), FinishedAt: fromMS(r.FinishedAt), DurationMS: r.DurationMS,
		Outcome: r.Outcome, ErrorClass: domain.ErrorClass(r.ErrorClass), Error: r.Error,
		Request: raw(r.Request), Response: raw(r.Response), Output: raw(r.Output),
	}
}

// StartAttempt commits the intent to run a side-effecting attempt before the effect happens, so
// that a crash leaves a trace; it sets a.ID.
func (s *Store) StartAttempt(ctx context.Context, owner string, a *domain.Attempt) error {
	err := s.runTx(ctx, a.RunID, func(tx *sqlx.Tx) error {
		if err := s.checkOwner(ctx, tx, a.RunID, owner); err != nil {
			return err
		}
		return s.insertAttempt(ctx, tx, a)
	})
	if err != nil {
		a.ID = 0 // an insert rolled back with a batch named a row that does not exist
	}
	return err
}

const insertAttemptSQL = `INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at,
	duration_ms, outcome, error_class, error, request, response, output, pipeline)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT pipeline FROM runs WHERE id = ?))`

const updateAttemptSQL = `UPDATE step_attempts SET finished_at = ?, duration_ms = ?, outcome = ?, error_class = ?,
	error = ?, request = ?, response = ?, output = ? WHERE id = ? AND outcome = 'running'`

const insertOwnedAttemptSQL = `INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at,
	duration_ms, outcome, error_class, error, request, response, output, pipeline)
	SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, pipeline FROM runs
	WHERE id = ? AND state = 'processing' AND lease_owner = ?`

// insertOwnedAttempt inserts an attempt provided owner holds its run, in one statement. On
// PostgreSQL the statement also locks the run's row (FOR UPDATE), as checkOwner would, so
// that no takeover can commit before this transaction does.
func (s *Store) insertOwnedAttempt(ctx context.Context, tx *sqlx.Tx, owner string, a *domain.Attempt) error {
	r := toRow(a)
	args := []any{r.RunID, r.StepID, r.ItemIndex, r.Attempt, r.StepKey, r.StartedAt,
		r.FinishedAt, r.DurationMS, r.Outcome, r.ErrorClass, r.Error, r.Request, r.Response, r.Output, r.RunID, owner}
	if s.dialect == "postgres" {
		var ids []int64
		if err := tx.SelectContext(ctx, &ids, s.db.Rebind(insertOwnedAttemptSQL+` FOR UPDATE RETURNING id`), args...); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		if len(ids) != 1 {
			return fmt.Errorf("run %s is no longer held by %s: %w", a.RunID, owner, domain.ErrLeaseLost)
		}
		a.ID = ids[0]
		return nil
	}
	res, err := s.txExec(ctx, tx, insertOwnedAttemptSQL, args...)
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("run %s is no longer held by %s: %w", a.RunID, owner, domain.ErrLeaseLost)
	}
	a.ID, err = res.LastInsertId()
	return err
}

func (s *Store) insertAttempt(ctx context.Context, tx *sqlx.Tx, a *domain.Attempt) error {
	r := toRow(a)
	args := []any{r.RunID, r.StepID, r.ItemIndex, r.Attempt, r.StepKey, r.StartedAt, r.FinishedAt,
		r.DurationMS, r.Outcome, r.ErrorClass, r.Error, r.Request, r.Response, r.Output, r.RunID}
	if s.dialect == "postgres" {
		if err := s.txGet(ctx, tx, &a.ID, insertAttemptSQL+` RETURNING id`, args...); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		return nil
	}
	res, err := s.txExec(ctx, tx, insertAttemptSQL, args...)
	if err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	a.ID, err = res.LastInsertId()
	return err
}

// FinishAttempt records an attempt's result: it updates the intent row written by
// StartAttempt, or inserts the attempt whole when there was none (steps without side effects).
// A run transition, when given, commits together with it. Nothing is written when owner no
// longer holds the run.
func (s *Store) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	return s.CommitAttempts(ctx, owner, []*domain.Attempt{a}, nil, ch)
}

// CommitAttempts commits in one transaction, in this order: the finished attempts done (each
// as FinishAttempt writes it, model calls included), the intent start when not nil (as
// StartAttempt writes it), and the transition ch when not nil. The engine writes the attempts
// of pure steps this way: their commit waits for the next write that has to be durable (a side
// effect's intent, a pause, the run's end) and goes with it. Nothing is written when owner no
// longer holds the run, and then every ID is left as it was, so that the same attempts can be
// committed again.
func (s *Store) CommitAttempts(ctx context.Context, owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	ch = storableChange(ch)
	runID := ""
	switch {
	case len(done) > 0:
		runID = done[0].RunID
	case start != nil:
		runID = start.RunID
	default:
		return errors.New("commit attempts: no attempt names the run")
	}
	ids := make([]int64, len(done))
	for i, a := range done {
		ids[i] = a.ID
	}
	restore := func() {
		for i, a := range done {
			a.ID = ids[i]
		}
		if start != nil {
			start.ID = 0
		}
	}
	if s.chainable(owner, done, start, ch) {
		// Pipelined with the other runs' commits when the batch allows (strict: a partial
		// write fails the statement), else alone in a transaction.
		one, err := s.chainedStmt(owner, runID, done, *ch, true)
		if err != nil {
			return err
		}
		err = s.runStmt(ctx, runID, func(tx *sqlx.Tx) error {
			restore()
			st, err := s.chainedStmt(owner, runID, done, *ch, false)
			if err != nil {
				return err
			}
			return st.scan(tx.QueryRowContext(ctx, st.query, st.args...))
		}, one)
		if err != nil {
			restore()
		}
		return err
	}
	batch := s.batchable(done, owner)
	var batchStmts []sizedStmt
	if len(batch) > 0 {
		st, err := s.batchStmt(ctx, 0)
		if err != nil {
			return err
		}
		batchStmts = append(batchStmts, sizedStmt{st, 0})
	}
	for _, n := range chunkSizes(len(batch)) {
		st, err := s.batchStmt(ctx, n)
		if err != nil {
			return err
		}
		batchStmts = append(batchStmts, sizedStmt{st, n})
	}
	err := s.runTx(ctx, runID, func(tx *sqlx.Tx) error {
		// A group commit may run this again after a rollback: start from the IDs the attempts
		// came with.
		restore()
		checked := false
		if len(batchStmts) > 0 {
			if err := s.insertBatch(ctx, tx, owner, batch, batchStmts); err != nil {
				return err
			}
			checked = true
		}
		for _, a := range done[len(batch):] {
			if err := s.finishAttemptTx(ctx, tx, owner, a, checked); err != nil {
				return err
			}
			checked = true
		}
		if start != nil {
			if !checked {
				if err := s.checkOwner(ctx, tx, runID, owner); err != nil {
					return err
				}
			}
			if err := s.insertAttempt(ctx, tx, start); err != nil {
				return err
			}
		}
		if ch == nil {
			return nil
		}
		if checked && owner != "" {
			// The run is in processing under owner, and stays so until this commits.
			return s.applyTransitionTx(ctx, tx, runID, domain.StateProcessing, owner, *ch)
		}
		return s.transitionTx(ctx, tx, runID, *ch)
	})
	if err != nil {
		restore()
	}
	return err
}

// maxBatchRows is the most attempts one insert statement carries on SQLite. The foreign key
// on run_id makes a multi-row insert one that may abort half-way, so SQLite copies every page it
// changes to a statement journal, which moves from memory to a temporary file (an open, writes
// and a close per commit) past 64 KiB, 15 pages. The attempts of different steps land on
// different leaves of step_attempts_stats: five rows keep a statement to about 11 pages.
const maxBatchRows = 5

// chunkSizes splits n attempts into the fewest statements of at most maxBatchRows rows, of
// sizes as even as possible (none of one row, for n > 1).
func chunkSizes(n int) []int {
	if n < 2 {
		return nil
	}
	k := (n + maxBatchRows - 1) / maxBatchRows
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// batchable returns the leading attempts of done that SQLite can insert with multi-row
// statements: new rows (no intent row to close) without model calls, written by an owner.
func (s *Store) batchable(done []*domain.Attempt, owner string) []*domain.Attempt {
	if s.dialect != "sqlite" || owner == "" {
		return nil
	}
	n := 0
	for n < len(done) && done[n].ID == 0 && len(done[n].Calls) == 0 {
		n++
	}
	if n < 2 {
		return nil
	}
	return done[:n]
}

// insertBatchSQL inserts n attempts in the order given, all of one run: with one statement for
// the deferred attempts of pure steps instead of one per attempt, a step costs SQLite little
// more than its rows. The texts that are often empty come as NULL for the empty text (orNull).
// Parameters are plain ?s: the driver looks the name of a ?NNN up for every argument.
func insertBatchSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at,
	duration_ms, outcome, error_class, error, request, response, output, pipeline) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), COALESCE(?, ''), ?)")
	}
	return b.String()
}

// batchRowArgs is the number of arguments of each row of insertBatchSQL.
const batchRowArgs = 15

// orNull is a text argument of insertBatchSQL: nil (NULL, which the statement stores as the
// empty text) when empty, so that the driver copies nothing for it.
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// sizedStmt is a prepared insert of n attempts (n = 0: ownerPipelineSQL).
type sizedStmt struct {
	*sqlx.Stmt
	n int
}

// ownerPipelineSQL reads what a batch needs to know of its run.
const ownerPipelineSQL = `SELECT state, lease_owner, pipeline FROM runs WHERE id = ?`

// batchStmt returns the prepared insert of n attempts (n = 0: ownerPipelineSQL), preparing it
// on first use. It is called before the transaction: with one connection, preparing inside
// it would wait for itself.
func (s *Store) batchStmt(ctx context.Context, n int) (*sqlx.Stmt, error) {
	st, err := s.prepareOnce(ctx, &s.batches, n, func() string {
		if n > 0 {
			return insertBatchSQL(n)
		}
		return ownerPipelineSQL
	})
	if err != nil {
		return nil, fmt.Errorf("preparing the insert of %d attempts: %w", n, err)
	}
	return st, nil
}

// insertBatch checks that owner holds the run, then inserts attempts with the prepared
// multi-row statements (see chunkSizes) and sets their IDs: AUTOINCREMENT gives the rows
// of one statement consecutive ids, in the order of its VALUES.
func (s *Store) insertBatch(ctx context.Context, tx *sqlx.Tx, owner string, batch []*domain.Attempt, stmts []sizedStmt) error {
	runID := batch[0].RunID
	var cur struct {
		State    string `db:"state"`
		Owner    string `db:"lease_owner"`
		Pipeline string `db:"pipeline"`
	}
	if err := tx.StmtxContext(ctx, stmts[0].Stmt).GetContext(ctx, &cur, runID); err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	if cur.State != string(domain.StateProcessing) || cur.Owner != owner {
		return fmt.Errorf("run %s is %s under %q: %w", runID, cur.State, cur.Owner, domain.ErrLeaseLost)
	}
	// The run and its pipeline are the same in every row: boxed once, not once per row.
	var run, pipeline any = runID, cur.Pipeline
	args := make([]any, 0, min(len(batch), maxBatchRows)*batchRowArgs)
	for _, st := range stmts[1:] {
		n := st.n
		chunk := batch[:n]
		batch = batch[n:]
		args = args[:0]
		for _, a := range chunk {
			// int64, not int: database/sql converts an int by reflection, into a second box.
			args = append(args, run, a.StepID, int64(a.ItemIndex), int64(a.Attempt), a.StepKey, ms(a.StartedAt), ms(a.FinishedAt),
				a.DurationMS, a.Outcome, orNull(string(a.ErrorClass)), orNull(storable(a.Error)), orNull(storable(string(a.Request))),
				orNull(storable(string(a.Response))), orNull(storable(string(a.Output))), pipeline)
		}
		res, err := tx.StmtxContext(ctx, st.Stmt).ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("record attempts: %w", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for i, a := range chunk {
			a.ID = last - int64(n-1-i)
		}
	}
	return nil
}

// finishAttemptTx writes one finished attempt inside tx. ownerChecked says an earlier
// statement of tx already found the run held by owner: the transaction holds SQLite's write
// lock, or PostgreSQL's row lock, so that cannot have changed.
func (s *Store) finishAttemptTx(ctx context.Context, tx *sqlx.Tx, owner string, a *domain.Attempt, ownerChecked bool) error {
	switch {
	case a.ID == 0 && owner != "" && !ownerChecked:
		// Checking the owner inside the insert is as safe as a separate read (SQLite's write
		// lock is held; PostgreSQL's insert locks the run row), and saves a statement per step.
		if err := s.insertOwnedAttempt(ctx, tx, owner, a); err != nil {
			return err
		}
	default:
		if !ownerChecked {
			if err := s.checkOwner(ctx, tx, a.RunID, owner); err != nil {
				return err
			}
		}
		if a.ID == 0 {
			if err := s.insertAttempt(ctx, tx, a); err != nil {
				return err
			}
			break
		}
		r := toRow(a)
		res, err := s.txExec(ctx, tx, updateAttemptSQL, r.FinishedAt, r.DurationMS, r.Outcome, r.ErrorClass, r.Error, r.Request, r.Response, r.Output, r.ID)
		if err != nil {
			return fmt.Errorf("record attempt result: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("attempt %d of %s was closed by another process: %w", a.Attempt, a.StepID, domain.ErrLeaseLost)
		}
	}
	return s.insertCalls(ctx, tx, a)
}

const insertCallSQL = `INSERT INTO model_calls (attempt_id, run_id, step_id, reask, provider, model, request, response, parsed,
	finish_reason, outcome, verdict, reasons, prompt_tokens, completion_tokens, latency_ms, error, at,
	family, client_request_id, request_id, response_model, processing_ms, reasoning_tokens)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func (s *Store) insertCalls(ctx context.Context, tx *sqlx.Tx, a *domain.Attempt) error {
	for _, c := range a.Calls {
		// A model's answer may hold a NUL character (JSON's \u0000, decoded) or bytes that are
		// not UTF-8: the texts are made storable, as an attempt's are (toRow).
		if _, err := s.txExec(ctx, tx, insertCallSQL, a.ID, a.RunID, a.StepID, c.Reask, storable(c.Provider), storable(c.Model),
			storable(string(c.Request)), storable(c.Response), storable(string(c.Parsed)), storable(c.FinishReason), c.Outcome,
			storable(c.Verdict), storable(string(c.Reasons)), c.PromptTokens, c.CompletionTokens, c.LatencyMS, storable(c.Error),
			ms(c.At), storable(c.Family), storable(c.ClientRequestID), storable(c.RequestID), storable(c.ResponseModel),
			nullInt64(c.ProcessingMS), nullInt(c.ReasoningTokens)); err != nil {
			return fmt.Errorf("record model call: %w", err)
		}
	}
	return nil
}

// ModelCalls returns every model call of a run in order, with the step and attempt they
// belong to.
func (s *Store) ModelCalls(ctx context.Context, runID string) ([]CallRecord, error) {
	var rows []struct {
		StepID           string        `db:"step_id"`
		Attempt          int           `db:"attempt"`
		ItemIndex        int           `db:"item_index"`
		Reask            int           `db:"reask"`
		Provider         string        `db:"provider"`
		Model            string        `db:"model"`
		Request          string        `db:"request"`
		Response         string        `db:"response"`
		Parsed           string        `db:"parsed"`
		FinishReason     string        `db:"finish_reason"`
		Outcome          string        `db:"outcome"`
		Verdict          string        `db:"verdict"`
		Reasons          string        `db:"reasons"`
		PromptTokens     int           `db:"prompt_tokens"`
		CompletionTokens int           `db:"completion_tokens"`
		LatencyMS        int64         `db:"latency_ms"`
		Error            string        `db:"error"`
		At               int64         `db:"at"`
		Family           string        `db:"family"`
		ClientRequestID  string        `db:"client_request_id"`
		RequestID        string        `db:"request_id"`
		ResponseModel    string        `db:"response_model"`
		ProcessingMS     sql.NullInt64 `db:"processing_ms"`
		ReasoningTokens  sql.NullInt64 `db:"reasoning_tokens"`
	}
	err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT c.step_id, a.attempt, a.item_index, c.reask, c.provider, c.model,
		c.request, c.response, c.parsed, c.finish_reason, c.outcome, c.verdict, c.reasons, c.prompt_tokens,
		c.completion_tokens, c.latency_ms, c.error, c.at, c.family, c.client_request_id, c.request_id, c.response_model,
		c.processing_ms, c.reasoning_tokens
		FROM model_calls c JOIN step_attempts a ON a.id = c.attempt_id WHERE c.run_id = ? ORDER BY c.id`), runID)
	if err != nil {
		return nil, err
	}
	out := make([]CallRecord, len(rows))
	for i, r := range rows {
		raw := func(s string) []byte {
			if s == "" {
				return nil
			}
			return []byte(s)
		}
		out[i] = CallRecord{StepID: r.StepID, Attempt: r.Attempt, ItemIndex: r.ItemIndex, ModelCall: domain.ModelCall{
			Reask: r.Reask, Provider: r.Provider, Model: r.Model, Request: raw(r.Request), Response: r.Response,
			Parsed: raw(r.Parsed), FinishReason: r.FinishReason, Outcome: r.Outcome, Verdict: r.Verdict, Reasons: raw(r.Reasons),
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, LatencyMS: r.LatencyMS, Error: r.Error, At: fromMS(r.At),
			Family: r.Family, ClientRequestID: r.ClientRequestID, RequestID: r.RequestID, ResponseModel: r.ResponseModel,
		}}
		if r.ProcessingMS.Valid {
			v := r.ProcessingMS.Int64
			out[i].ProcessingMS = &v
		}
		if r.ReasoningTokens.Valid {
			v := int(r.ReasoningTokens.Int64)
			out[i].ReasoningTokens = &v
		}
	}
	return out, nil
}

// nullInt64 and nullInt store an optional figure as NULL when it was not reported.
func nullInt64(v *int64) sql.NullInt64 {
	if v == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: *v, Valid: true}
}

func nullInt(v *int) sql.NullInt64 {
	if v == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(*v), Valid: true}
}

// CallRecord is a model call with the attempt it belongs to.
type CallRecord struct {
	StepID    string
	Attempt   int
	ItemIndex int
	domain.ModelCall
}

func (s *Store) checkOwner(ctx context.Context, tx *sqlx.Tx, runID, owner string) error {
	if owner == "" {
		return nil
	}
	var cur struct {
		State string `db:"state"`
		Owner string `db:"lease_owner"`
	}
	if err := s.txGet(ctx, tx, &cur, selectStateSQL+s.forUpdate(), runID); err != nil {
		return fmt.Errorf("run %s: %w", runID, err)
	}
	if cur.State != string(domain.StateProcessing) || cur.Owner != owner {
		return fmt.Errorf("run %s is %s under %q: %w", runID, cur.State, cur.Owner, domain.ErrLeaseLost)
	}
	return nil
}

// Attempts returns every attempt of a run in the order they were recorded.
func (s *Store) Attempts(ctx context.Context, runID string) ([]domain.Attempt, error) {
	var rows []attemptRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT id, run_id, step_id, item_index, attempt, step_key, started_at,
		finished_at, duration_ms, outcome, error_class, error, request, response, output
		FROM step_attempts WHERE run_id = ? ORDER BY id`), runID); err != nil {
		return nil, err
	}
	out := make([]domain.Attempt, len(rows))
	for i, r := range rows {
		out[i] = r.domain()
	}
	return out, nil
}

// maxChained is the most finished attempts commitChained writes in its one statement; more go
// one statement each.
const maxChained = 8

// chainable says whether CommitAttempts can write done and ch in one statement on PostgreSQL:
// the common commit of a run's pure steps (new attempts without model calls, then the run's
// transition out of processing; not back to queued, which also notifies).
func (s *Store) chainable(owner string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) bool {
	if s.dialect != "postgres" || owner == "" || start != nil || ch == nil || ch.To == domain.StateQueued ||
		len(done) == 0 || len(done) > maxChained {
		return false
	}
	for _, a := range done {
		if a.ID != 0 || len(a.Calls) > 0 {
			return false
		}
	}
	return true
}

// chainedStmt is one statement that writes what insertOwnedAttempt, then insertAttempt for
// each further attempt, then applyTransitionTx would, in one round trip: the first insert
// checks the lease and locks the run's row (FOR UPDATE), each further insert reads the row the
// one before it returned (so the attempts are numbered in their order, and none is written
// without the lease), and the transition and its event apply only when the attempts were
// written. Its scan gives the outcomes of the separate statements: ErrLeaseLost when owner no
// longer holds the run (nothing written), ErrStateConflict when the run did not move. strict
// turns that last case into an SQL error (a division by zero), so that the statement never
// commits attempts without the transition when it shares an implicit transaction with others.
func (s *Store) chainedStmt(owner, runID string, done []*domain.Attempt, ch domain.Change, strict bool) (*oneStmt, error) {
	now := s.now()
	targs, err := transitionArgs(runID, domain.StateProcessing, owner, ch, now)
	if err != nil {
		return nil, err
	}
	rows := make([]attemptRow, len(done))
	for i, a := range done {
		rows[i] = toRow(a)
	}
	if !strict || !mergeable(ch.To) {
		return chainedSingle(owner, runID, rows, done, ch, strict, targs, now), nil
	}
	// Most such writes share a batch and go as mergedSQL's values: the statement of their own
	// is built only for one that goes alone.
	return &oneStmt{
		merge: &chainedWrite{runID: runID, owner: owner, rows: rows, to: ch.To,
			next: ms(ch.NextAttemptAt), errorClass: string(ch.ErrorClass), errText: ch.Error, failedStep: ch.FailedStep,
			reason: ch.Reason, actor: ch.Actor, at: ms(now), done: done},
		single: func() *oneStmt { return chainedSingle(owner, runID, rows, done, ch, strict, targs, now) },
	}, nil
}

// chainedSingle is chainedStmt's statement for one run, from its attempts' rows and the
// transition's arguments.
func chainedSingle(owner, runID string, rows []attemptRow, done []*domain.Attempt, ch domain.Change, strict bool, targs []any, now time.Time) *oneStmt {
	args := make([]any, 0, 14*len(rows)+2+len(targs)+5)
	for i, r := range rows {
		args = append(args, r.RunID, r.StepID, r.ItemIndex, r.Attempt, r.StepKey, r.StartedAt,
			r.FinishedAt, r.DurationMS, r.Outcome, r.ErrorClass, r.Error, r.Request, r.Response, r.Output)
		if i == 0 {
			args = append(args, r.RunID, owner)
		}
	}
	args = append(args, targs...)
	args = append(args, string(domain.StateProcessing), string(ch.To), ch.Reason, ch.Actor, ms(now))
	scan := func(row interface{ Scan(...any) error }) error {
		ids := make([]sql.NullInt64, len(done))
		var moved int64
		dest := make([]any, 0, len(done)+1)
		for i := range ids {
			dest = append(dest, &ids[i])
		}
		dest = append(dest, &moved)
		if err := row.Scan(dest...); err != nil {
			return fmt.Errorf("record attempts: %w", err)
		}
		if !ids[0].Valid {
			return fmt.Errorf("run %s is no longer held by %s: %w", runID, owner, domain.ErrLeaseLost)
		}
		if moved != 1 {
			return fmt.Errorf("run %s changed under us: %w", runID, domain.ErrStateConflict)
		}
		for i, a := range done {
			if !ids[i].Valid {
				return fmt.Errorf("record attempt %s of run %s: no row written", a.StepID, runID)
			}
			a.ID = ids[i].Int64
		}
		return nil
	}
	return &oneStmt{query: chainedSQL(len(done), ch.To, strict), args: args, scan: scan}
}

type chainKey struct {
	n      int
	to     domain.RunState
	strict bool
}

var chained sync.Map // chainKey -> string

// chainedSQL is commitChained's statement for n attempts and a transition to state to, built
// once (its text is also the key of pgx's per-connection statement cache).
func chainedSQL(n int, to domain.RunState, strict bool) string {
	key := chainKey{n, to, strict}
	if q, ok := chained.Load(key); ok {
		return q.(string)
	}
	const cols = `INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at,
	duration_ms, outcome, error_class, error, request, response, output, pipeline)
	SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, pipeline FROM `
	var b strings.Builder
	b.WriteString("WITH a0 AS (" + cols + "runs WHERE id = ? AND state = 'processing' AND lease_owner = ? FOR UPDATE RETURNING id, pipeline)")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, ",\n a%d AS (%sa%d RETURNING id, pipeline)", i, cols, i-1)
	}
	fmt.Fprintf(&b, ",\n moved AS (%s AND EXISTS (SELECT 1 FROM a%d) RETURNING id)", transitionSQL(to), n-1)
	b.WriteString(",\n ev AS (INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) SELECT id, ?, ?, ?, ?, ? FROM moved)\nSELECT ")
	for i := range n {
		fmt.Fprintf(&b, "(SELECT id FROM a%d), ", i)
	}
	if strict {
		b.WriteString("CASE WHEN EXISTS (SELECT 1 FROM a0) THEN 1 / (SELECT count(*)::int FROM moved) ELSE 0 END")
	} else {
		b.WriteString("(SELECT count(*) FROM moved)")
	}
	q := sqlx.Rebind(sqlx.DOLLAR, b.String())
	chained.Store(key, q)
	return q
}
