package ledger

import (
	"database/sql"
	"fmt"
	"strconv"

	"github.com/pipectl/pipectl/internal/domain"
)

// A batch of chained commits (chainedStmt: a run's finished pure attempts and its transition
// out of processing) is, on PostgreSQL, written by one statement over arrays instead of one
// statement per run. Executing a statement costs the server about as much as the rows it
// writes (parsing the runs table's CHECK constraint, starting the executor, a round of
// protocol messages): 32 runs' commits cost its backend 65-70 µs of CPU a run as one statement
// against 150-160 µs as 32 pipelined ones (issue 16).
//
// The statement keeps each run's promise of chainedStmt: its attempts are written only while
// its owner holds it (the row is locked first, FOR UPDATE, in id order), and its transition
// and event only when its attempts were; a run whose lease was lost writes nothing and is told
// so, without failing the others. A run whose attempts were written but whose transition was
// not fails the whole statement (a division by zero), so that the batch goes again write by
// write and that run's caller sees its own error.

// chainedWrite is what chainedStmt writes, kept as values for mergedSQL.
type chainedWrite struct {
	runID, owner string
	rows         []attemptRow
	to           domain.RunState
	next         int64 // next_attempt_at
	errorClass   string
	errText      string
	failedStep   string
	reason       string
	actor        string
	at           int64
	done         []*domain.Attempt
}

// size is about how many bytes the write adds to mergedSQL's arguments.
func (w *chainedWrite) size() int {
	n := len(w.runID) + len(w.owner) + len(w.errText) + len(w.failedStep) + len(w.reason) + len(w.actor) + 64
	for _, r := range w.rows {
		n += len(r.RunID) + len(r.StepID) + len(r.StepKey) + len(r.Outcome) + len(r.ErrorClass) + len(r.Error) +
			len(r.Request) + len(r.Response) + len(r.Output) + 64
	}
	return n
}

// mergeable says whether ch can be written by mergedSQL: a transition that only leaves
// processing and clears the lease (chainable excludes queued, which also notifies).
func mergeable(to domain.RunState) bool {
	switch to {
	case domain.StateProcessing, domain.StateQueued:
		return false
	}
	return domain.CanTransition(domain.StateProcessing, to)
}

// mergedSQL writes the chained commits of many runs. Runs come as parallel arrays ($1-$10),
// attempts as parallel arrays naming their run ($11-$24). It returns a row per attempt written
// and a row (with a NULL attempt) per run that wrote none, each saying whether its run moved.
var mergedSQL = `WITH r AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])
    AS r(id, owner, to_state, next_attempt_at, error_class, error, failed_step, reason, actor, at)
),
locked AS (
  SELECT runs.id, runs.pipeline FROM runs JOIN r ON r.id = runs.id
  WHERE runs.id = ANY($1::text[]) AND runs.state = 'processing' AND runs.lease_owner = r.owner
  ORDER BY runs.id FOR UPDATE OF runs
),
a AS (
  ` + insertAttemptsSQL(11, "locked") + `
),
moved AS (
  UPDATE runs SET state = r.to_state, updated_at = r.at, lease_owner = '', lease_expires_at = 0,
    next_attempt_at = r.next_attempt_at, error_class = r.error_class, error = r.error, failed_step = r.failed_step,
    finished_at = CASE WHEN r.to_state IN ('succeeded', 'failed_permanent') THEN r.at ELSE runs.finished_at END
  FROM r
  WHERE runs.id = r.id AND runs.state = 'processing' AND runs.id IN (SELECT run_id FROM a)
  RETURNING runs.id
),
ev AS (
  INSERT INTO run_events (run_id, from_state, to_state, reason, actor, at)
  SELECT r.id, 'processing', r.to_state, r.reason, r.actor, r.at FROM moved JOIN r ON r.id = moved.id
),
whole AS (
  SELECT 1 / (CASE WHEN (SELECT count(DISTINCT run_id) FROM a) = (SELECT count(*) FROM moved) THEN 1 ELSE 0 END) AS ok
)
SELECT r.id, a.id, a.step_id, a.item_index, a.attempt, moved.id IS NOT NULL, whole.ok
FROM r CROSS JOIN whole LEFT JOIN a ON a.run_id = r.id LEFT JOIN moved ON moved.id = r.id`

// mergedArgs lays writes out as mergedSQL's arrays.
func mergedArgs(writes []*chainedWrite) []any {
	n := 0
	for _, w := range writes {
		n += len(w.rows)
	}
	var (
		ids, owners, tos, classes, errs, steps, reasons, actors = make([]string, 0, len(writes)), make([]string, 0, len(writes)),
			make([]string, 0, len(writes)), make([]string, 0, len(writes)), make([]string, 0, len(writes)),
			make([]string, 0, len(writes)), make([]string, 0, len(writes)), make([]string, 0, len(writes))
		nexts, ats = make([]int64, 0, len(writes)), make([]int64, 0, len(writes))
	)
	atts := newAttemptArrays(n)
	for _, w := range writes {
		ids, owners, tos = append(ids, w.runID), append(owners, w.owner), append(tos, string(w.to))
		nexts, classes, errs, steps = append(nexts, w.next), append(classes, w.errorClass), append(errs, w.errText), append(steps, w.failedStep)
		reasons, actors, ats = append(reasons, w.reason), append(actors, w.actor), append(ats, w.at)
		for _, r := range w.rows {
			atts.add(r)
		}
	}
	return append([]any{ids, owners, tos, nexts, classes, errs, steps, reasons, actors, ats}, atts.args()...)
}

// attemptArrays lays attempt rows out as the parallel arrays that insertAttemptsSQL reads.
type attemptArrays struct {
	run, step, key, outcome, class, err, req, resp, out []string
	item, attempt                                       []int32
	started, finished, duration                         []int64
}

func newAttemptArrays(n int) *attemptArrays {
	strs := func() []string { return make([]string, 0, n) }
	return &attemptArrays{
		run: strs(), step: strs(), key: strs(), outcome: strs(), class: strs(), err: strs(), req: strs(), resp: strs(), out: strs(),
		item: make([]int32, 0, n), attempt: make([]int32, 0, n),
		started: make([]int64, 0, n), finished: make([]int64, 0, n), duration: make([]int64, 0, n),
	}
}

func (a *attemptArrays) add(r attemptRow) {
	a.run, a.step, a.item, a.attempt, a.key = append(a.run, r.RunID), append(a.step, r.StepID), append(a.item, int32(r.ItemIndex)), append(a.attempt, int32(r.Attempt)), append(a.key, r.StepKey)
	a.started, a.finished, a.duration = append(a.started, r.StartedAt), append(a.finished, r.FinishedAt), append(a.duration, r.DurationMS)
	a.outcome, a.class, a.err = append(a.outcome, r.Outcome), append(a.class, r.ErrorClass), append(a.err, r.Error)
	a.req, a.resp, a.out = append(a.req, r.Request), append(a.resp, r.Response), append(a.out, r.Output)
}

// args are the arrays in insertAttemptsSQL's order.
func (a *attemptArrays) args() []any {
	return []any{a.run, a.step, a.item, a.attempt, a.key, a.started, a.finished, a.duration, a.outcome, a.class, a.err, a.req, a.resp, a.out}
}

// insertAttemptsSQL is the CTE body that inserts the attempts of attemptArrays, given as the
// parameters from $first on, for the runs of the CTE held (id, pipeline) only, in their order.
func insertAttemptsSQL(first int, held string) string {
	p := func(i int, typ string) string { return "$" + strconv.Itoa(first+i) + "::" + typ + "[]" }
	return `INSERT INTO step_attempts (run_id, step_id, item_index, attempt, step_key, started_at, finished_at,
    duration_ms, outcome, error_class, error, request, response, output, pipeline)
  SELECT t.run_id, t.step_id, t.item_index, t.attempt, t.step_key, t.started_at, t.finished_at,
    t.duration_ms, t.outcome, t.error_class, t.error, t.request, t.response, t.output, ` + held + `.pipeline
  FROM unnest(` + p(0, "text") + `, ` + p(1, "text") + `, ` + p(2, "int") + `, ` + p(3, "int") + `, ` + p(4, "text") + `, ` + p(5, "bigint") + `, ` + p(6, "bigint") + `,
    ` + p(7, "bigint") + `, ` + p(8, "text") + `, ` + p(9, "text") + `, ` + p(10, "text") + `, ` + p(11, "text") + `, ` + p(12, "text") + `, ` + p(13, "text") + `) WITH ORDINALITY
    AS t(run_id, step_id, item_index, attempt, step_key, started_at, finished_at, duration_ms, outcome,
      error_class, error, request, response, output, ord)
  JOIN ` + held + ` ON ` + held + `.id = t.run_id
  ORDER BY t.ord
  RETURNING id, run_id, step_id, item_index, attempt`
}

// mergedRow is one row of mergedSQL's answer.
type mergedRow struct {
	run     string
	id      sql.NullInt64
	step    sql.NullString
	item    sql.NullInt32
	attempt sql.NullInt32
	moved   bool
	ok      int
}

type attemptKey struct {
	step          string
	item, attempt int
}

// mergedOutcomes reads mergedSQL's rows and says each write's outcome, as chainedStmt's scan
// would for that run alone, setting the IDs of the attempts written.
func mergedOutcomes(writes []*chainedWrite, rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}) ([]error, error) {
	type got struct {
		ids   map[attemptKey]int64
		moved bool
		seen  bool
	}
	byRun := make(map[string]*got, len(writes))
	for _, w := range writes {
		byRun[w.runID] = &got{}
	}
	for rows.Next() {
		var m mergedRow
		if err := rows.Scan(&m.run, &m.id, &m.step, &m.item, &m.attempt, &m.moved, &m.ok); err != nil {
			return nil, fmt.Errorf("record attempts: %w", err)
		}
		g := byRun[m.run]
		if g == nil {
			return nil, fmt.Errorf("record attempts: the ledger answered for run %s, which was not asked about", m.run)
		}
		g.seen, g.moved = true, m.moved
		if m.id.Valid {
			if g.ids == nil {
				g.ids = map[attemptKey]int64{}
			}
			g.ids[attemptKey{m.step.String, int(m.item.Int32), int(m.attempt.Int32)}] = m.id.Int64
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]error, len(writes))
	for i, w := range writes {
		g := byRun[w.runID]
		switch {
		case !g.seen:
			return nil, fmt.Errorf("record attempts: the ledger said nothing of run %s", w.runID)
		case len(g.ids) == 0:
			out[i] = fmt.Errorf("run %s is no longer held by %s: %w", w.runID, w.owner, domain.ErrLeaseLost)
			continue
		case !g.moved:
			out[i] = fmt.Errorf("run %s changed under us: %w", w.runID, domain.ErrStateConflict)
			continue
		}
		for j, r := range w.rows {
			id, ok := g.ids[attemptKey{r.StepID, r.ItemIndex, r.Attempt}]
			if !ok {
				out[i] = fmt.Errorf("record attempt %s of run %s: no row written", r.StepID, w.runID)
				break
			}
			w.done[j].ID = id
		}
	}
	return out, nil
}
