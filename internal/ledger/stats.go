package ledger

import (
	"context"
	"math"
	"sort"
	"time"
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

// Stats computes, for runs created since a time (optionally of one pipeline):
//   - success and dead-letter rates over the runs that finished (succeeded or failed_permanent);
//   - the retry rate: retries over all step attempts;
//   - p50 and p95 of the run latency (finished_at - created_at of finished runs) and, per step,
//     of attempt durations, by the nearest-rank method: the value at rank ceil(p*n) of the
//     sorted values.
//
// Two scans over indexed columns; the percentiles are computed here, since SQLite has none.
func (s *Store) Stats(ctx context.Context, since time.Time, pipeline string) ([]PipelineStats, error) {
	q := `SELECT pipeline, state, created_at, finished_at FROM runs WHERE created_at >= ?`
	args := []any{ms(since)}
	if pipeline != "" {
		q += ` AND pipeline = ?`
		args = append(args, pipeline)
	}
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	type acc struct {
		Stats
		latencies []int64
		steps     map[string]*acc
	}
	byPipeline := map[string]*acc{}
	get := func(name string) *acc {
		a := byPipeline[name]
		if a == nil {
			a = &acc{Stats: Stats{Pipeline: name}, steps: map[string]*acc{}}
			byPipeline[name] = a
		}
		return a
	}
	for rows.Next() {
		var name, state string
		var created, finished int64
		if err := rows.Scan(&name, &state, &created, &finished); err != nil {
			rows.Close()
			return nil, err
		}
		a := get(name)
		a.Runs++
		switch state {
		case "succeeded":
			a.Succeeded++
		case "failed_permanent":
			a.DeadLettered++
		}
		if finished > 0 && (state == "succeeded" || state == "failed_permanent") {
			a.latencies = append(a.latencies, finished-created)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	q = `SELECT r.pipeline, a.step_id, a.attempt, a.duration_ms, a.outcome FROM step_attempts a JOIN runs r ON r.id = a.run_id
		WHERE r.created_at >= ? AND a.outcome NOT IN ('running', 'reused', 'skipped', 'needs_review', 'waiting')`
	if pipeline != "" {
		q += ` AND r.pipeline = ?`
	}
	rows, err = s.db.QueryContext(ctx, s.db.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name, step, outcome string
		var attempt int
		var duration int64
		if err := rows.Scan(&name, &step, &attempt, &duration, &outcome); err != nil {
			rows.Close()
			return nil, err
		}
		a := get(name)
		st := a.steps[step]
		if st == nil {
			st = &acc{Stats: Stats{Pipeline: name, Step: step}}
			a.steps[step] = st
		}
		st.Attempts++
		a.Attempts++
		if attempt > 1 {
			st.Retries++
			a.Retries++
		}
		switch outcome {
		case "failed", "abandoned":
		default:
			st.Succeeded++
		}
		st.latencies = append(st.latencies, duration)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]PipelineStats, 0, len(byPipeline))
	for _, a := range byPipeline {
		finish(&a.Stats, a.latencies, a.Succeeded+a.DeadLettered)
		ps := PipelineStats{Stats: a.Stats}
		for _, st := range a.steps {
			finish(&st.Stats, st.latencies, st.Attempts)
			st.DeadLettered = 0
			ps.Steps = append(ps.Steps, st.Stats)
		}
		sort.Slice(ps.Steps, func(i, j int) bool { return ps.Steps[i].Step < ps.Steps[j].Step })
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pipeline < out[j].Pipeline })
	return out, nil
}

func finish(st *Stats, latenciesMS []int64, finished int) {
	if finished > 0 {
		if st.Step == "" {
			st.SuccessRate = float64(st.Succeeded) / float64(finished)
			st.DeadLetterRate = float64(st.DeadLettered) / float64(finished)
		} else {
			st.SuccessRate = float64(st.Succeeded) / float64(finished)
		}
	}
	if st.Attempts > 0 {
		st.RetryRate = float64(st.Retries) / float64(st.Attempts)
	}
	sort.Slice(latenciesMS, func(i, j int) bool { return latenciesMS[i] < latenciesMS[j] })
	st.P50Seconds = Percentile(latenciesMS, 0.50)
	st.P95Seconds = Percentile(latenciesMS, 0.95)
}

// Percentile is the nearest-rank percentile of sorted millisecond values, in seconds.
func Percentile(sortedMS []int64, p float64) float64 {
	if len(sortedMS) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sortedMS))))
	rank = min(max(rank, 1), len(sortedMS))
	return float64(sortedMS[rank-1]) / 1000
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
