package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
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
			ops := a.ops(store, nil)
			if pipeline != "" {
				if err := ops.CheckPipeline(ctx, pipeline, nil); err != nil {
					return opError(err)
				}
			}
			stats, breaches, err := ops.Stats(ctx, time.Now().Add(-since), pipeline, check)
			if err != nil {
				return err
			}
			if format == "json" {
				if err := writeJSON(a.jsonOut, map[string]any{"since": since.String(), "pipelines": stats, "breaches": breaches}); err != nil {
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

func writeStats(a *app, stats []ledger.PipelineStats, since time.Duration) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PIPELINE / STEP\tRUNS\tSUCCESS\tRETRIES\tDEAD LETTERS\tP50\tP95\t(last %s)\n", since)
	for _, p := range stats {
		runs := fmt.Sprint(p.Runs)
		if p.DryRuns > 0 {
			runs += fmt.Sprintf(" (+%d dry)", p.DryRuns)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%.1f%%\t%.1f%%\t%s\t%s\t\n", p.Pipeline, runs, 100*p.SuccessRate, 100*p.RetryRate, 100*p.DeadLetterRate, secs(p.P50Seconds), secs(p.P95Seconds))
		for _, s := range p.Steps {
			fmt.Fprintf(tw, "  %s\t%d att.\t%.1f%%\t%.1f%%\t\t%s\t%s\t%s\n", s.Step, s.Attempts, 100*s.SuccessRate, 100*s.RetryRate, secs(s.P50Seconds), secs(s.P95Seconds), outcomeList(s.Outcomes))
		}
	}
	tw.Flush()
}

// outcomeList is a step's attempts by outcome, most frequent first.
func outcomeList(m map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var list []kv
	for k, n := range m {
		list = append(list, kv{k, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n || list[i].n == list[j].n && list[i].k < list[j].k })
	parts := make([]string, len(list))
	for i, e := range list {
		parts[i] = fmt.Sprintf("%s %d", e.k, e.n)
	}
	return strings.Join(parts, ", ")
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
