package operate

import (
	"context"
	"fmt"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

// Stats returns the operational figures of each pipeline (or one) over runs created since a
// time; with check, also the alerts of each pipeline's newest spec that the figures breach.
func (o *Ops) Stats(ctx context.Context, since time.Time, pipeline string, check bool) ([]ledger.PipelineStats, []string, error) {
	stats, err := o.Store.Stats(ctx, since, pipeline)
	if err != nil {
		return nil, nil, err
	}
	breaches := []string{}
	if !check {
		return stats, breaches, nil
	}
	v, err := o.validator()
	if err != nil {
		return nil, nil, err
	}
	for _, ps := range stats {
		text, path, err := o.Store.LatestSpec(ctx, ps.Pipeline)
		if err != nil {
			return nil, nil, err
		}
		p, _ := v.Parse(path, []byte(text))
		if p == nil {
			breaches = append(breaches, fmt.Sprintf("%s: its newest stored spec does not validate; alerts cannot be checked", ps.Pipeline))
			continue
		}
		al := p.Alerts
		if al.DeadLetterRate != nil && ps.DeadLetterRate > *al.DeadLetterRate {
			breaches = append(breaches, fmt.Sprintf("%s: dead-letter rate %.2f%% > %.2f%%", ps.Pipeline, 100*ps.DeadLetterRate, 100**al.DeadLetterRate))
		}
		if al.RetryRate != nil && ps.RetryRate > *al.RetryRate {
			breaches = append(breaches, fmt.Sprintf("%s: retry rate %.2f%% > %.2f%%", ps.Pipeline, 100*ps.RetryRate, 100**al.RetryRate))
		}
		if al.P95Seconds != nil && ps.P95Seconds > *al.P95Seconds {
			breaches = append(breaches, fmt.Sprintf("%s: p95 latency %.3fs > %.3fs", ps.Pipeline, ps.P95Seconds, *al.P95Seconds))
		}
	}
	return stats, breaches, nil
}
