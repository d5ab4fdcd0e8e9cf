package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

func (a *app) dlqCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "The dead-letter queue: runs in failed_permanent"}
	cmd.AddCommand(a.dlqListCommand(), a.dlqRedriveCommand())
	return cmd
}

func (a *app) dlqListCommand() *cobra.Command {
	var pipeline, format string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--pipeline P] [--format table|json]",
		Short: "List dead-lettered runs with their failed step, error class, error and age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			if pipeline != "" {
				if err := o.CheckPipeline(ctx, pipeline, nil); err != nil {
					return opError(err)
				}
			}
			runs, err := o.store.ListRuns(ctx, ledger.RunFilter{State: domain.StateFailedPermanent, Pipeline: pipeline, Limit: limit})
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(a.jsonOut, operate.RunViews(runs))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tPIPELINE\tFAILED STEP\tCLASS\tAGE\tERROR")
			for _, r := range runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Pipeline, r.FailedStep, r.ErrorClass, time.Since(r.FinishedAt).Round(time.Second), shorten(oneLine(firstLine(r.Error)), 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&pipeline, "pipeline", "", "only this pipeline's runs")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many runs (0: all)")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func (a *app) dlqRedriveCommand() *cobra.Command {
	var pipeline string
	var enqueue bool
	cmd := &cobra.Command{
		Use:   "redrive RUN...|--pipeline P [--enqueue]",
		Short: "Send dead-lettered runs back: queued, then executed after their last completed step",
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 0) == (pipeline == "") {
				return usageErrorf("name runs or --pipeline, not both")
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			var runs []*domain.Run
			if pipeline != "" {
				if err := o.CheckPipeline(ctx, pipeline, nil); err != nil {
					return opError(err)
				}
				if runs, err = o.List(ctx, ledger.RunFilter{State: domain.StateFailedPermanent, Pipeline: pipeline}); err != nil {
					return opError(err)
				}
				if len(runs) == 0 {
					fmt.Fprintf(a.stdout, "no dead-lettered runs of %s\n", pipeline)
					return nil
				}
			}
			for _, id := range args {
				r, err := o.Redrivable(ctx, id)
				if err != nil {
					return opError(err)
				}
				runs = append(runs, r)
			}
			actor := a.g.actorName()
			worst := 0
			for _, r := range runs {
				queued, err := o.Redrive(ctx, actor, r)
				if err != nil {
					return opError(err)
				}
				fmt.Fprintf(a.stdout, "run %s redriven by %s (was: step %s, %s)\n", r.ID, actor, r.FailedStep, shorten(oneLine(firstLine(r.Error)), 80))
				if enqueue {
					continue
				}
				if err := o.continueRun(ctx, queued); err != nil {
					worst = max(worst, exitCode(err))
					if ee, ok := err.(*exitError); ok && ee.err != nil {
						fmt.Fprintf(a.stderr, "pipectl: %v\n", ee.err)
					}
				}
			}
			if worst != 0 {
				return &exitError{code: worst}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pipeline, "pipeline", "", "redrive every dead-lettered run of this pipeline")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only queue the runs for workers")
	return cmd
}
