package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/ledger"
)

func (a *app) statsCommand() *cobra.Command {
	var since time.Duration
	var pipeline, format string
	var check bool
	cmd := &cobra.Command{
		Use:   "stats [--since 24h] [--pipeline P] [--format table|json] [--check]",
		Short: "Success, retry and dead-letter rates and p50/p95 latency per pipeline and step",
		Long: "Counts runs created in the window. Success and dead-letter rates are over the runs that\n" +
			"finished; the retry rate is retries over step attempts; latencies are nearest-rank\n" +
			"percentiles of run duration (and, per step, of attempt duration). --check compares each\n" +
			"pipeline with the alerts of its newest spec and exits 1 naming every breach.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if since <= 0 {
				return usageErrorf("--since must be positive")
			}
			ctx := cmd.Context()
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			stats, err := store.Stats(ctx, time.Now().Add(-since), pipeline)
			if err != nil {
				return err
			}
			var breaches []string
			if check {
				if breaches, err = a.breaches(cmd, store, stats); err != nil {
					return err
				}
			}
			if format == "json" {
				if err := writeJSON(a.stdout, map[string]any{"since": since.String(), "pipelines": stats, "breaches": nonNil(breaches)}); err != nil {
					return err
				}
			} else {
				writeStats(a, stats, since)
				for _, b := range breaches {
					fmt.Fprintf(a.stdout, "BREACH %s\n", b)
				}
			}
			if len(breaches) > 0 {
				return &exitError{code: domain.ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "window: runs created this long ago or later")
	cmd.Flags().StringVar(&pipeline, "pipeline", "", "only this pipeline")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	cmd.Flags().BoolVar(&check, "check", false, "exit 1 when a pipeline breaches the alerts in its spec")
	return cmd
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeStats(a *app, stats []ledger.PipelineStats, since time.Duration) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PIPELINE / STEP\tRUNS\tSUCCESS\tRETRIES\tDEAD LETTERS\tP50\tP95\t(last %s)\n", since)
	for _, p := range stats {
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t%.1f%%\t%.1f%%\t%s\t%s\t\n", p.Pipeline, p.Runs, 100*p.SuccessRate, 100*p.RetryRate, 100*p.DeadLetterRate, secs(p.P50Seconds), secs(p.P95Seconds))
		for _, s := range p.Steps {
			fmt.Fprintf(tw, "  %s\t%d att.\t%.1f%%\t%.1f%%\t\t%s\t%s\t\n", s.Step, s.Attempts, 100*s.SuccessRate, 100*s.RetryRate, secs(s.P50Seconds), secs(s.P95Seconds))
		}
	}
	tw.Flush()
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}

// breaches compares each pipeline with the alerts of its newest stored spec.
func (a *app) breaches(cmd *cobra.Command, store *ledger.Store, stats []ledger.PipelineStats) ([]string, error) {
	v, err := dsl.NewValidator()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ps := range stats {
		text, path, err := store.LatestSpec(cmd.Context(), ps.Pipeline)
		if err != nil {
			return nil, err
		}
		p, _ := v.Parse(path, []byte(text))
		if p == nil {
			out = append(out, fmt.Sprintf("%s: its newest stored spec does not validate; alerts cannot be checked", ps.Pipeline))
			continue
		}
		al := p.Alerts
		if al.DeadLetterRate != nil && ps.DeadLetterRate > *al.DeadLetterRate {
			out = append(out, fmt.Sprintf("%s: dead-letter rate %.2f%% > %.2f%%", ps.Pipeline, 100*ps.DeadLetterRate, 100**al.DeadLetterRate))
		}
		if al.RetryRate != nil && ps.RetryRate > *al.RetryRate {
			out = append(out, fmt.Sprintf("%s: retry rate %.2f%% > %.2f%%", ps.Pipeline, 100*ps.RetryRate, 100**al.RetryRate))
		}
		if al.P95Seconds != nil && ps.P95Seconds > *al.P95Seconds {
			out = append(out, fmt.Sprintf("%s: p95 latency %.3fs > %.3fs", ps.Pipeline, ps.P95Seconds, *al.P95Seconds))
		}
	}
	return out, nil
}
