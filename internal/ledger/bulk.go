package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// QueuedRun is what differs from one run of a batch to the next; everything else (pipeline,
// spec, version, actor) is the batch's.
type QueuedRun struct {
	ID             string
	IdempotencyKey string
	InputHash      string
	// Input is the canonical JSON of the input.
	Input []byte
}

// BatchSpec is what every run of a batch shares.
type BatchSpec struct {
	Pipeline string
	SpecText string
	SpecHash string
	SpecPath string
	Version  string
	// Actor is recorded on each run's creation event.
	Actor string
}

// Existing is the run that already held an idempotency key.
type Existing struct {
	ID        string
	InputHash string
	State     domain.RunState
}

// BatchWriter creates many queued runs of one pipeline and spec, a batch per commit. It keeps
// the statements of the batch sizes it has seen prepared, so that a long stream of batches
// parses its SQL once. Create may be called concurrently (see Parallel); Close releases the
// statements once no Create is running.
type BatchWriter struct {
	s    *Store
	spec BatchSpec
	// stmts holds the prepared statements by their SQL text.
	mu    sync.Mutex
	stmts map[string]*sqlx.Stmt
}

// RunWriter creates queued runs in batches; *BatchWriter is the ledger's.
type RunWriter interface {
	Create(ctx context.Context, runs []QueuedRun) ([]*Existing, error)
	Parallel() int
	Close() error
}

var _ RunWriter = (*BatchWriter)(nil)

// NewBatchWriter returns a writer of queued runs of spec.
func (s *Store) NewBatchWriter(spec BatchSpec) RunWriter {
	return &BatchWriter{s: s, spec: spec, stmts: map[string]*sqlx.Stmt{}}
}

// Parallel is how many batches are worth writing at once: PostgreSQL runs each transaction in
// a server process of its own, so two batches use two cores; SQLite has one writer.
func (w *BatchWriter) Parallel() int {
	if w.s.dialect == "postgres" {
		return 2
	}
	return 1
}

// Close releases the prepared statements.
func (w *BatchWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for q, st := range w.stmts {
		st.Close()
		delete(w.stmts, q)
	}
	return nil
}

// MaxBatchRuns bounds one batch: SQLite binds at most 32,766 parameters per statement, and a
// row of the multi-row insert takes four.
const MaxBatchRuns = 4096

// Create inserts the runs as queued, each with its creation event, in one commit, and on
// PostgreSQL announces them with one NOTIFY (sent at commit). It returns, for each run in
// order, nil when the run was created, or the run that already held its idempotency key: in
// the ledger, or earlier in the same batch (that run, created now, is queued). Nothing is
// written for a run whose key was taken. An error wrapping domain.ErrLedgerUnavailable says
// the batch was not written (the connection failed before COMMIT): it may be tried again.
func (w *BatchWriter) Create(ctx context.Context, runs []QueuedRun) ([]*Existing, error) {
	out := make([]*Existing, len(runs))
	if len(runs) == 0 {
		return out, nil
	}
	if len(runs) > MaxBatchRuns {
		return nil, fmt.Errorf("create runs: a batch holds at most %d runs, not %d", MaxBatchRuns, len(runs))
	}
	// The first run of each key is inserted; a later one in the same batch is its duplicate.
	// Deciding it here, not by the database's order of conflict, says exactly which line won.
	first := make(map[string]int, len(runs))
	var unique []int
	for i, r := range runs {
		if _, seen := first[r.IdempotencyKey]; !seen {
			first[r.IdempotencyKey] = i
			unique = append(unique, i)
		}
	}
	insertSQL, eventSQL := w.s.bulkInsertSQL(len(unique)), ""
	var prep []string
	if w.s.dialect == "sqlite" {
		prep = append(prep, insertSQL)
	} else {
		eventSQL = pgBulkEventSQL
		prep = append(prep, insertSQL, eventSQL)
	}
	// Statements are prepared before the transaction begins: SQLite has one connection, and
	// preparing inside the transaction would wait for itself.
	if err := w.prepare(ctx, prep...); err != nil {
		return nil, err
	}
	now := ms(w.s.now())
	created := make(map[string]bool, len(unique))
	taken := map[string]*Existing{}
	// A batch is a group of its own: it commits in a transaction of its own, on a connection of
	// its own, rather than through the group committer, which would put two batches written at
	// once (see Parallel) into one queue. The closure still starts from scratch if run again.
	err := w.s.directTx(ctx, func(tx *sqlx.Tx) error {
		clear(created)
		clear(taken)
		ids, err := w.insert(ctx, tx, insertSQL, runs, unique, now)
		if err != nil {
			return err
		}
		var createdIDs []string
		for _, id := range ids {
			created[id] = true
		}
		var lost []string
		for _, i := range unique {
			if created[runs[i].ID] {
				createdIDs = append(createdIDs, runs[i].ID)
			} else {
				lost = append(lost, runs[i].IdempotencyKey)
			}
		}
		if len(createdIDs) > 0 {
			if err := w.events(ctx, tx, eventSQL, createdIDs, now); err != nil {
				return err
			}
		}
		if len(lost) > 0 {
			if err := w.s.existing(ctx, tx, w.spec.Pipeline, lost, taken); err != nil {
				return err
			}
		}
		if w.s.dialect == "postgres" && len(createdIDs) > 0 {
			// One wake-up for the batch: a worker that wakes claims until the queue is empty.
			_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, createdIDs[0])
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create runs: %w", err)
	}
	for i, r := range runs {
		f := first[r.IdempotencyKey]
		switch {
		case f == i && created[r.ID]:
		case f == i:
			ex := taken[r.IdempotencyKey]
			if ex == nil {
				// Skipped on conflict, yet not found: only a deleted run could do this.
				return nil, fmt.Errorf("create runs: run of %s with key %q: %w", w.spec.Pipeline, r.IdempotencyKey, domain.ErrNotFound)
			}
			out[i] = ex
		case created[runs[f].ID]:
			out[i] = &Existing{ID: runs[f].ID, InputHash: runs[f].InputHash, State: domain.StateQueued}
		default:
			out[i] = out[f]
		}
	}
	return out, nil
}

func (w *BatchWriter) prepare(ctx context.Context, queries ...string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, q := range queries {
		if w.stmts[q] != nil || len(w.stmts) >= maxPrepared {
			continue
		}
		st, err := w.s.db.PreparexContext(ctx, q)
		if err != nil {
			return fmt.Errorf("create runs: preparing: %w", err)
		}
		w.stmts[q] = st
	}
	return nil
}

// maxPrepared bounds the statements a writer keeps: batches cut short by their byte budget
// come in many sizes, and each size is another statement on SQLite.
const maxPrepared = 8

func (w *BatchWriter) query(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (*sql.Rows, error) {
	w.mu.Lock()
	st := w.stmts[q]
	w.mu.Unlock()
	if st == nil {
		return tx.QueryContext(ctx, q, args...)
	}
	return tx.StmtxContext(ctx, st).QueryContext(ctx, args...)
}

func (w *BatchWriter) exec(ctx context.Context, tx *sqlx.Tx, q string, args ...any) error {
	w.mu.Lock()
	st := w.stmts[q]
	w.mu.Unlock()
	var err error
	if st == nil {
		_, err = tx.ExecContext(ctx, q, args...)
	} else {
		_, err = tx.StmtxContext(ctx, st).ExecContext(ctx, args...)
	}
	return err
}

// insert runs the multi-row insert of the unique runs and returns the ids it inserted.
func (w *BatchWriter) insert(ctx context.Context, tx *sqlx.Tx, q string, runs []QueuedRun, unique []int, now int64) ([]string, error) {
	sp := w.spec
	var args []any
	if w.s.dialect == "postgres" {
		ids, keys, hashes, inputs := make([]string, len(unique)), make([]string, len(unique)), make([]string, len(unique)), make([]string, len(unique))
		for j, i := range unique {
			ids[j], keys[j], hashes[j], inputs[j] = runs[i].ID, runs[i].IdempotencyKey, runs[i].InputHash, string(runs[i].Input)
		}
		args = []any{sp.Pipeline, sp.SpecText, sp.SpecHash, sp.SpecPath, sp.Version, now, ids, keys, hashes, inputs}
	} else {
		args = make([]any, 0, bulkShared+bulkPerRow*len(unique))
		args = append(args, sp.Pipeline, sp.SpecText, sp.SpecHash, sp.SpecPath, sp.Version, now)
		for _, i := range unique {
			args = append(args, runs[i].ID, runs[i].IdempotencyKey, runs[i].InputHash, string(runs[i].Input))
		}
	}
	rows, err := w.query(ctx, tx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ids := make([]string, 0, len(unique))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// events records the creation event of each created run.
func (w *BatchWriter) events(ctx context.Context, tx *sqlx.Tx, q string, ids []string, now int64) error {
	if w.s.dialect == "postgres" {
		return w.exec(ctx, tx, q, ids, w.spec.Actor, now)
	}
	// The number of created runs varies from batch to batch; SQLite parses a statement of a
	// few hundred rows in microseconds, so this one is not kept prepared.
	var b strings.Builder
	b.WriteString(`INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at) SELECT v.column1, '', 'queued', 'created', ?, ? FROM (VALUES `)
	args := make([]any, 0, 2+len(ids))
	args = append(args, w.spec.Actor, now)
	for j, id := range ids {
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`(?)`)
		args = append(args, id)
	}
	b.WriteString(`) AS v`)
	_, err := tx.ExecContext(ctx, b.String(), args...)
	return err
}

// existing loads the runs that hold keys, into taken by key.
func (s *Store) existing(ctx context.Context, tx *sqlx.Tx, pipeline string, keys []string, taken map[string]*Existing) error {
	var rows []struct {
		ID    string `db:"id"`
		Key   string `db:"idempotency_key"`
		Hash  string `db:"input_hash"`
		State string `db:"state"`
	}
	const cols = `SELECT id, idempotency_key, input_hash, state FROM runs WHERE pipeline = `
	var err error
	if s.dialect == "postgres" {
		err = tx.SelectContext(ctx, &rows, cols+`$1 AND idempotency_key = ANY($2::text[])`, pipeline, keys)
	} else {
		q := cols + `? AND idempotency_key IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(keys)), ", ") + `)`
		args := make([]any, 0, 1+len(keys))
		args = append(args, pipeline)
		for _, k := range keys {
			args = append(args, k)
		}
		err = tx.SelectContext(ctx, &rows, q, args...)
	}
	if err != nil {
		return err
	}
	for _, r := range rows {
		taken[r.Key] = &Existing{ID: r.ID, InputHash: r.Hash, State: domain.RunState(r.State)}
	}
	return nil
}

// The multi-row insert binds what the runs share once and four values per run.
const (
	bulkShared = 6 // pipeline, spec text, spec hash, spec path, version, now
	bulkPerRow = 4 // id, key, input hash, input
)

// pgBulkInsertSQL inserts a batch from four arrays, whatever its size: one statement text, so
// one prepared plan. ORDINALITY keeps the rows in the batch's order.
const pgBulkInsertSQL = `INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, spec_path,
	pipectl_version, state, created_at, updated_at, step_key_base)
	SELECT u.id, $1, u.k, u.h, u.i, $2, $3, $4, $5, 'queued', $6, $6, u.k
	FROM unnest($7::text[], $8::text[], $9::text[], $10::text[]) WITH ORDINALITY AS u(id, k, h, i, n)
	ORDER BY u.n
	ON CONFLICT (pipeline, idempotency_key) DO NOTHING
	RETURNING id`

const pgBulkEventSQL = `INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at)
	SELECT u.id, '', 'queued', 'created', $2, $3 FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY u.n`

// bulkInsertSQL is the insert of n runs. On SQLite the shared values are bound once, in a
// one-row subquery joined to a VALUES list of the runs' own four. Every parameter is a plain ?:
// the driver looks up the name of each numbered one (?7) in a list, which made a batch of
// 2,000 runs cost quadratic time. WHERE true tells SQLite's parser that ON CONFLICT is the
// upsert clause, not a join constraint. The step key base is the idempotency key, as for a
// run created alone.
func (s *Store) bulkInsertSQL(n int) string {
	if s.dialect == "postgres" {
		return pgBulkInsertSQL
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, spec_path,
	pipectl_version, state, created_at, updated_at, step_key_base)
	SELECT v.column1, s.pipeline, v.column2, v.column3, v.column4, s.spec_text, s.spec_hash, s.spec_path, s.version, 'queued', s.now, s.now, v.column2
	FROM (SELECT ? AS pipeline, ? AS spec_text, ? AS spec_hash, ? AS spec_path, ? AS version, ? AS now) AS s, (VALUES `)
	for j := range n {
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`(?, ?, ?, ?)`)
	}
	b.WriteString(`) AS v WHERE true ON CONFLICT (pipeline, idempotency_key) DO NOTHING RETURNING id`)
	return b.String()
}
