package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/operate"
)

func (a *app) replayCommand() *cobra.Command {
	var from, specPath, llmMode string
	var enqueue bool
	cmd := &cobra.Command{
		Use:   "replay RUN [--from STEP] [--spec FILE] [--llm recorded|live] [--enqueue]",
		Short: "Run a finished or paused run again: a new run with the stored input, linked to the original",
		Long: "The replay uses the stored input and, unless --spec names a fixed definition, the stored spec.\n" +
			"--from STEP keeps the recorded outputs of the steps STEP does not lead to and re-executes STEP\n" +
			"and everything after it. Step keys are the original's, so targets that honour Idempotency-Key\n" +
			"(and guards) do not apply an effect twice. --llm recorded answers model calls from the\n" +
			"original run's recorded calls; live asks the providers.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if llmMode != "recorded" && llmMode != "live" {
				return usageErrorf("--llm is recorded or live, not %q", llmMode)
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			req := operate.ReplayRequest{RunID: args[0], From: from, LLM: llmMode, Enqueue: enqueue}
			if specPath != "" {
				v, err := dsl.NewValidator()
				if err != nil {
					return err
				}
				o.Validator = v
				if req.Spec, err = a.loadPipeline(v, specPath); err != nil {
					return err
				}
			}
			started := time.Now()
			res, err := o.Replay(ctx, a.g.actorName(), req)
			if res == nil {
				return opError(err)
			}
			fmt.Fprintf(a.stdout, "replay of run %s: new run %s with the stored input and spec sha256 %s\n", res.Run.ReplayOf, res.Run.ID, shorten(res.Run.SpecHash, 16))
			if len(res.Reused) > 0 {
				fmt.Fprintf(a.stdout, "  reused the recorded outputs of %s\n", strings.Join(res.Reused, ", "))
			}
			fmt.Fprintln(a.stdout, "  step keys are the original run's: side effects it already applied are deduplicated by their targets and guards")
			if enqueue {
				fmt.Fprintln(a.stdout, "  queued for workers")
				return nil
			}
			return a.reportRun(res.Result, err, time.Since(started))
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "re-execute from this step; earlier steps keep their recorded outputs")
	cmd.Flags().StringVar(&specPath, "spec", "", "run this (fixed) pipeline file instead of the stored spec")
	cmd.Flags().StringVar(&llmMode, "llm", "recorded", "recorded: answer model calls from the original run; live: ask the providers")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only create the replay run, queued for workers")
	return cmd
}
