package ledger

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// Stats are the operational figures of one pipeline, or of one step of it, over a window.
type Stats struct {
	Pipeline string `json:"pipeline"`
	Step     string `json:"step,omitempty"`
	// Runs created in the window, dry runs apart (for a step: step attempts).
	Runs    int `json:"runs,omitempty"`
	DryRuns int `json:"dry_runs,omitempty"`
	// Attempts counts every finished attempt, whatever its outcome; Outcomes breaks it down.
	Attempts int            `json:"attempts,omitempty"`
	Outcomes map[string]int `json:"outcomes,omitempty"`
	// Succeeded: for a pipeline, runs that succeeded; for a step, attempts that succeeded,
	// were guarded, skipped or reused.
	Succeeded    int `json:"succeeded"`
	DeadLettered int `json:"dead_lettered"`
	// Retries are attempts that follow a failed (or abandoned) attempt of their step and
	// item: an approval or a signal that completes a paused step is no retry.
	Retries        int     `json:"retries"`
	SuccessRate    float64 `json:"success_rate"`
	DeadLetterRate float64 `json:"dead_letter_rate"`
	RetryRate      float64 `json:"retry_rate"`
	P50Seconds     float64 `json:"p50_seconds"`
	P95Seconds     float64 `json:"p95_seconds"`
}

// PipelineStats holds a pipeline's figures and its steps'.
type PipelineStats struct {
	Stats
	Steps []Stats `json:"steps"`
}

// Stats computes, for the window since a time (optionally for one pipeline):
//   - per pipeline, over runs created in the window: success and dead-letter rates over the runs
//     that finished (succeeded or failed_permanent), and p50 and p95 of their latency
//     (finished_at - created_at);
//   - per step, over attempts started in the window: attempts, retries (attempts after the
//     first of their step and item), the share that succeeded, and p50 and p95 of their duration;
//   - the pipeline's retry rate: its retries over its attempts.
//
// Percentiles use the nearest-rank method: the value at rank ceil(p*n) of the sorted values.
// Counting and ranking happen in SQL over covering indexes, so the cost grows with the number
// of pipelines and steps, not with rows shipped to the process.
func (s *Store) Stats(ctx context.Context, since time.Time, pipeline string) ([]PipelineStats, error) {
	db, err := s.readers()
	if err != nil {
		return nil, err
	}
	from := ms(since)
	filter, args := "", []any{from}
	if pipeline != "" {
		filter, args = " AND pipeline = ?", append(args, pipeline)
	}
	byPipeline := map[string]*PipelineStats{}
	get := func(name string) *PipelineStats {
		p := byPipeline[name]
		if p == nil {
			p = &PipelineStats{Stats: Stats{Pipeline: name}}
			byPipeline[name] = p
		}
		return p
	}
	var runCounts []struct {
		Pipeline string `db:"pipeline"`
		State    string `db:"state"`
		N        int    `db:"n"`
	}
	var stepCounts []stepCount
	// The two counting scans are independent: they run side by side.
	var pausedThen, dryCounts []stepCount
	err = runParallel(2, []func() error{
		func() error {
			// Attempts that complete a step after a review or a signal: attempts after the
			// first, but no retries.
			return db.SelectContext(ctx, &pausedThen, s.db.Rebind(`SELECT pipeline, step_id, outcome, COUNT(*) AS n, 0 AS retries FROM (
				SELECT a.pipeline, a.step_id, (SELECT n.outcome FROM step_attempts n WHERE n.run_id = a.run_id AND n.step_id = a.step_id
					AND n.item_index = a.item_index AND n.attempt = a.attempt + 1) AS outcome
				FROM step_attempts a WHERE a.started_at >= ?`+strings.ReplaceAll(filter, "pipeline", "a.pipeline")+` AND a.outcome IN ('needs_review', 'waiting')) x
				WHERE outcome IS NOT NULL AND outcome <> 'running' GROUP BY pipeline, step_id, outcome`), args...)
		},
		func() error {
			// The attempts of dry runs, to take out of the figures.
			return db.SelectContext(ctx, &dryCounts, s.db.Rebind(`SELECT a.pipeline, a.step_id, a.outcome, COUNT(*) AS n,
				COALESCE(SUM(CASE WHEN a.attempt > 1 THEN 1 ELSE 0 END), 0) AS retries
				FROM step_attempts a
				WHERE a.run_id IN (SELECT id FROM runs WHERE `+s.dryRun()+` AND created_at >= ?) AND a.started_at >= ?`+strings.ReplaceAll(filter, "pipeline", "a.pipeline")+` AND a.attempt > 0 AND a.outcome <> 'running'
				GROUP BY a.pipeline, a.step_id, a.outcome`), append([]any{from - dryRunSlack}, args...)...)
		},
	})
	if err != nil {
		return nil, err
	}
	err = runParallel(2, []func() error{
		func() error {
			return db.SelectContext(ctx, &runCounts, s.db.Rebind(`SELECT pipeline, CASE WHEN dry_run THEN 'dry' ELSE state END AS state, COUNT(*) AS n FROM runs
				WHERE created_at >= ?`+filter+` GROUP BY pipeline, CASE WHEN dry_run THEN 'dry' ELSE state END`), args...)
		},
		func() error {
			// Retries are counted as attempts after the first, less those that follow a pause
			// (found from the pauses, which are few, not from every attempt).
			// One row per step, a column per outcome: grouping by the outcome too would sort
			// every attempt, while this walks the stats index in its order.
			var rows []map[string]any
			q := `SELECT pipeline, step_id, COALESCE(SUM(CASE WHEN attempt > 1 THEN 1 ELSE 0 END), 0) AS retries`
			for i, o := range finishedOutcomes {
				q += fmt.Sprintf(`, COALESCE(SUM(CASE WHEN outcome = '%s' THEN 1 ELSE 0 END), 0) AS o%d`, o, i)
			}
			q += ` FROM step_attempts WHERE started_at >= ?` + filter + ` AND attempt > 0 AND outcome <> 'running' GROUP BY pipeline, step_id`
			r, err := db.QueryxContext(ctx, s.db.Rebind(q), args...)
			if err != nil {
				return err
			}
			defer r.Close()
			for r.Next() {
				row := map[string]any{}
				if err := r.MapScan(row); err != nil {
					return err
				}
				rows = append(rows, row)
			}
			if err := r.Err(); err != nil {
				return err
			}
			for _, row := range rows {
				pipeline, step := asString(row["pipeline"]), asString(row["step_id"])
				retries := asInt(row["retries"])
				for i, o := range finishedOutcomes {
					if n := asInt(row[fmt.Sprintf("o%d", i)]); n > 0 {
						stepCounts = append(stepCounts, stepCount{pipeline, step, o, n, retries})
						retries = 0 // the step's retries ride on its first row
					}
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	for _, c := range runCounts {
		p := get(c.Pipeline)
		if c.State == "dry" {
			p.DryRuns += c.N
			continue
		}
		p.Runs += c.N
		switch c.State {
		case "succeeded":
			p.Succeeded += c.N
		case "failed_permanent":
			p.DeadLettered += c.N
		}
	}
	// Every percentile is an index walk of its own; they run two at a time.
	var jobs []func() error
	steps := map[[2]string]*Stats{}
	timed := map[[2]string]int{}
	for _, c := range pausedThen {
		stepCounts = append(stepCounts, stepCount{c.Pipeline, c.Step, c.Outcome, 0, -c.N})
	}
	for _, c := range dryCounts {
		stepCounts = append(stepCounts, stepCount{c.Pipeline, c.Step, c.Outcome, -c.N, -c.Retries})
		if !untimed[c.Outcome] {
			timed[[2]string{c.Pipeline, c.Step}] += c.N // the duration percentiles walk them all
		}
	}
	for _, c := range stepCounts {
		k := [2]string{c.Pipeline, c.Step}
		st := steps[k]
		if st == nil {
			st = &Stats{Pipeline: c.Pipeline, Step: c.Step, Outcomes: map[string]int{}}
			steps[k] = st
		}
		st.Attempts += c.N
		st.Retries += c.Retries
		st.Outcomes[c.Outcome] += c.N
		if st.Outcomes[c.Outcome] == 0 {
			delete(st.Outcomes, c.Outcome)
		}
		switch c.Outcome {
		case "succeeded", "guarded", "skipped", "reused", "dry_run":
			st.Succeeded += c.N
		}
		if !untimed[c.Outcome] {
			timed[k] += c.N
		}
	}
	for k, st := range steps {
		if st.Attempts == 0 {
			continue // only dry runs' attempts
		}
		if ended := st.Succeeded + st.Outcomes["failed"] + st.Outcomes["abandoned"]; ended > 0 {
			st.SuccessRate = float64(st.Succeeded) / float64(ended)
		}
		st.RetryRate = float64(st.Retries) / float64(st.Attempts)
		p := get(k[0])
		p.Steps = append(p.Steps, *st)
		p.Attempts += st.Attempts
		p.Retries += st.Retries
	}
	for _, p := range byPipeline {
		for i := range p.Steps {
			st := &p.Steps[i]
			n := timed[[2]string{st.Pipeline, st.Step}]
			jobs = append(jobs, func() (err error) {
				st.P50Seconds, st.P95Seconds, err = percentiles(ctx, db, `SELECT duration_ms FROM step_attempts
					WHERE pipeline = ? AND step_id = ? AND started_at >= ? AND `+countedOutcomes+` ORDER BY duration_ms`, n, st.Pipeline, st.Step, from)
				return err
			})
		}
		if finished := p.Succeeded + p.DeadLettered; finished > 0 {
			p.SuccessRate = float64(p.Succeeded) / float64(finished)
			p.DeadLetterRate = float64(p.DeadLettered) / float64(finished)
			jobs = append(jobs, func() (err error) {
				p.P50Seconds, p.P95Seconds, err = percentiles(ctx, db, `SELECT finished_at - created_at FROM runs`+s.latencyIndex()+`
					WHERE pipeline = ? AND finished_at > 0 AND created_at >= ? AND state IN ('succeeded', 'failed_permanent') AND `+s.notDryRun()+`
					ORDER BY finished_at - created_at`, finished, p.Pipeline, from)
				return err
			})
		}
		if p.Attempts > 0 {
			p.RetryRate = float64(p.Retries) / float64(p.Attempts)
		}
	}
	if err := runParallel(2, jobs); err != nil {
		return nil, err
	}
	out := make([]PipelineStats, 0, len(byPipeline))
	for _, p := range byPipeline {
		sort.Slice(p.Steps, func(i, j int) bool { return p.Steps[i].Step < p.Steps[j].Step })
		if p.Steps == nil {
			p.Steps = []Stats{}
		}
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pipeline < out[j].Pipeline })
	return out, nil
}

// runParallel runs jobs with at most n at a time and returns the first error.
func runParallel(n int, jobs []func() error) error {
	sem := make(chan struct{}, n)
	errs := make(chan error, len(jobs))
	for _, job := range jobs {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errs <- job()
		}()
	}
	for range n {
		sem <- struct{}{}
	}
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// latencyIndex steers SQLite to walk runs in latency order: its planner prefers the window
// index and would sort instead.
func (s *Store) latencyIndex() string {
	if s.dialect == "sqlite" {
		return " INDEXED BY runs_latency_real"
	}
	return ""
}

// countedOutcomes selects the attempts whose duration is work of their own, for the duration
// percentiles: not in flight, not reused, skipped or a pause (whose duration is a person's or
// the world's). Attempt 0 is a for_each step's collected output.
const countedOutcomes = `attempt > 0 AND outcome NOT IN ('running', 'reused', 'skipped', 'needs_review', 'waiting')`

// untimed are the outcomes countedOutcomes leaves out of the percentiles.
var untimed = map[string]bool{"running": true, "reused": true, "skipped": true, "needs_review": true, "waiting": true}

// stepCount is one row of the step counting queries.
type stepCount struct {
	Pipeline string `db:"pipeline"`
	Step     string `db:"step_id"`
	Outcome  string `db:"outcome"`
	N        int    `db:"n"`
	Retries  int    `db:"retries"`
}

// notDryRun and dryRun are the predicates of the runs_latency_real and runs_dry indexes, as
// each dialect's index spells them, so that the planners use them.
func (s *Store) notDryRun() string {
	if s.dialect == "sqlite" {
		return "dry_run = 0"
	}
	return "NOT dry_run"
}

func (s *Store) dryRun() string {
	if s.dialect == "sqlite" {
		return "dry_run = 1"
	}
	return "dry_run"
}

// dryRunSlack: the attempts of a dry run start after it is created, so the dry runs whose
// attempts fall in the window were created in it or shortly before; one whose first attempt
// waited longer than this is counted in the figures, the safe side for an alert.
const dryRunSlack = int64(24 * 60 * 60 * 1000)

// percentiles returns the p50 and p95 of a query's values by nearest rank, in seconds; the
// query must select one column ordered by an index, so each rank is an index walk with no sort;
// n is the number of values.
func percentiles(ctx context.Context, db *sqlx.DB, orderedQuery string, n int, args ...any) (float64, float64, error) {
	if n == 0 {
		return 0, 0, nil
	}
	var out [2]float64
	for i, p := range []float64{0.50, 0.95} {
		var v int64
		if err := db.GetContext(ctx, &v, db.Rebind(orderedQuery+` LIMIT 1 OFFSET ?`), append(args, rank(p, n)-1)...); err != nil {
			return 0, 0, err
		}
		out[i] = float64(v) / 1000
	}
	return out[0], out[1], nil
}

func rank(p float64, n int) int {
	return min(max(int(math.Ceil(p*float64(n))), 1), n)
}

// LatestSpec returns the spec text and path of a pipeline's newest run, where its alerts are.
func (s *Store) LatestSpec(ctx context.Context, pipeline string) (text, path string, err error) {
	var row struct {
		Text string `db:"spec_text"`
		Path string `db:"spec_path"`
	}
	err = s.db.GetContext(ctx, &row, s.db.Rebind(`SELECT spec_text, spec_path FROM runs WHERE pipeline = ? ORDER BY created_at DESC LIMIT 1`), pipeline)
	return row.Text, row.Path, err
}

// finishedOutcomes are the outcomes of a finished attempt (the CHECK of step_attempts but running).
var finishedOutcomes = []string{"succeeded", "failed", "skipped", "guarded", "dry_run", "abandoned", "needs_review", "waiting", "reused"}

func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func asInt(v any) int {
	switch x := v.(type) {
	case int64:
		return int(x)
	case int32:
		return int(x)
	case int:
		return x
	case float64:
		return int(x)
	case []byte:
		var n int
		fmt.Sscan(string(x), &n)
		return n
	case string:
		var n int
		fmt.Sscan(x, &n)
		return n
	}
	return 0
}
