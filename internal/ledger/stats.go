package ledger

import (
	"context"
	"math"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
)

// Stats are the operational figures of one pipeline, or of one step of it, over a window.
type Stats struct {
	Pipeline string `json:"pipeline"`
	Step     string `json:"step,omitempty"`
	// Runs created in the window (for a step: step attempts).
	Runs         int `json:"runs,omitempty"`
	Attempts     int `json:"attempts,omitempty"`
	Succeeded    int `json:"succeeded"`
	DeadLettered int `json:"dead_lettered"`
	// Retries are attempts after the first of their step (and item).
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
	var stepCounts []struct {
		Pipeline  string `db:"pipeline"`
		Step      string `db:"step_id"`
		N         int    `db:"n"`
		Retries   int    `db:"retries"`
		Succeeded int    `db:"succeeded"`
	}
	// The two counting scans are independent: they run side by side.
	err = runParallel(2, []func() error{
		func() error {
			return db.SelectContext(ctx, &runCounts, s.db.Rebind(`SELECT pipeline, state, COUNT(*) AS n FROM runs
				WHERE created_at >= ?`+filter+` GROUP BY pipeline, state`), args...)
		},
		func() error {
			return db.SelectContext(ctx, &stepCounts, s.db.Rebind(`SELECT pipeline, step_id, COUNT(*) AS n,
				COALESCE(SUM(CASE WHEN attempt > 1 THEN 1 ELSE 0 END), 0) AS retries,
				COALESCE(SUM(CASE WHEN outcome IN ('failed', 'abandoned') THEN 0 ELSE 1 END), 0) AS succeeded
				FROM step_attempts WHERE started_at >= ?`+filter+` AND `+countedOutcomes+`
				GROUP BY pipeline, step_id`), args...)
		},
	})
	if err != nil {
		return nil, err
	}
	for _, c := range runCounts {
		p := get(c.Pipeline)
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
	for _, c := range stepCounts {
		p := get(c.Pipeline)
		p.Steps = append(p.Steps, Stats{Pipeline: c.Pipeline, Step: c.Step, Attempts: c.N, Retries: c.Retries, Succeeded: c.Succeeded,
			SuccessRate: float64(c.Succeeded) / float64(c.N), RetryRate: float64(c.Retries) / float64(c.N)})
		p.Attempts += c.N
		p.Retries += c.Retries
	}
	for _, p := range byPipeline {
		for i := range p.Steps {
			st := &p.Steps[i]
			jobs = append(jobs, func() (err error) {
				st.P50Seconds, st.P95Seconds, err = percentiles(ctx, db, `SELECT duration_ms FROM step_attempts
					WHERE pipeline = ? AND step_id = ? AND started_at >= ? AND `+countedOutcomes+` ORDER BY duration_ms`, st.Attempts, st.Pipeline, st.Step, from)
				return err
			})
		}
		if finished := p.Succeeded + p.DeadLettered; finished > 0 {
			p.SuccessRate = float64(p.Succeeded) / float64(finished)
			p.DeadLetterRate = float64(p.DeadLettered) / float64(finished)
			jobs = append(jobs, func() (err error) {
				p.P50Seconds, p.P95Seconds, err = percentiles(ctx, db, `SELECT finished_at - created_at FROM runs`+s.latencyIndex()+`
					WHERE pipeline = ? AND finished_at > 0 AND created_at >= ? AND state IN ('succeeded', 'failed_permanent')
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
		return " INDEXED BY runs_latency"
	}
	return ""
}

// countedOutcomes leaves out attempts that did no work of their own.
// Attempt 0 is a for_each step's collected output.
const countedOutcomes = `attempt > 0 AND outcome NOT IN ('running', 'reused', 'skipped', 'needs_review', 'waiting')`

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
