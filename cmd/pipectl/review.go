package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/operate"
)

func (a *app) reviewCommand() *cobra.Command {
	var approve, reject, enqueue bool
	var note, hash string
	cmd := &cobra.Command{
		Use:   "review RUN --approve|--reject [--note TEXT] [--proposal-hash H] [--enqueue]",
		Short: "Decide on a run in needs_review: approve (and continue it) or reject (dead-letter it)",
		Long: "Approving accepts exactly the proposal the run holds (its sha256 is recorded; --proposal-hash\n" +
			"refuses when the held proposal is not the one you reviewed) and continues the run in this\n" +
			"process, or only queues it with --enqueue. Rejecting moves the run to failed_permanent.",
		Example: "  pipectl review 01m8p146433v            # show the proposal and what approving would do\n" +
			"  pipectl review 01m8p146433v --approve --proposal-hash 9f2c...\n" +
			"  pipectl review 01m8p146433v --reject --note \"wrong team\"",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if approve && reject {
				return usageErrorf("say --approve or --reject, not both")
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			if !approve && !reject {
				return a.showReview(ctx, o.Ops, args[0])
			}
			actor := a.g.actorName()
			d, err := o.Review(ctx, actor, operate.ReviewRequest{RunID: args[0], Approve: approve, ProposalHash: hash, Note: note, Enqueue: enqueue})
			if err != nil {
				return opError(err)
			}
			if reject {
				fmt.Fprintf(a.stdout, "run %s rejected by %s and dead-lettered\n", d.Run.ID, actor)
				return &exitError{code: domain.ExitFailed}
			}
			fmt.Fprintf(a.stdout, "run %s approved by %s (%s)\n", d.Run.ID, actor, d.What)
			if enqueue {
				fmt.Fprintf(a.stdout, "queued for workers\n")
				return nil
			}
			return o.continueRun(ctx, d.Run)
		},
	}
	cmd.Flags().BoolVar(&approve, "approve", false, "approve what the run holds and continue it")
	cmd.Flags().BoolVar(&reject, "reject", false, "reject it and dead-letter the run")
	cmd.Flags().StringVar(&note, "note", "", "comment recorded with the decision")
	cmd.Flags().StringVar(&hash, "proposal-hash", "", "refuse unless the held proposal has this sha256")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only queue the run for workers")
	return cmd
}

// showReview prints what a run in needs_review holds and the commands that decide it; a run in
// another state has nothing to decide (exit 4).
func (a *app) showReview(ctx context.Context, ops *operate.Ops, id string) error {
	doc, run, err := ops.Show(ctx, id)
	if err != nil {
		return opError(err)
	}
	if doc.Held == nil {
		return &exitError{code: domain.ExitRefused, err: fmt.Errorf("run %s is %s, not needs_review: there is nothing to decide", run.ID, run.State)}
	}
	fmt.Fprintf(a.stdout, "run %s of %s is waiting for a review\n", run.ID, run.Pipeline)
	writeHeld(a.stdout, doc.Held)
	hash := ""
	if doc.Held.ProposalHash != "" {
		hash = " --proposal-hash " + doc.Held.ProposalHash
	}
	fmt.Fprintf(a.stdout, "\ndecide with\n  pipectl review %s --approve%s [--note TEXT]\n  pipectl review %s --reject --note TEXT\n", run.ID, hash, run.ID)
	return nil
}

func (a *app) signalCommand() *cobra.Command {
	var data string
	var enqueue bool
	cmd := &cobra.Command{
		Use:   "signal RUN STEP --data FILE|-|JSON [--enqueue]",
		Short: "Deliver the payload a wait step is waiting for, and continue the run",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return usageErrorf("--data is required: a JSON file, - for stdin, or inline JSON")
			}
			ctx := cmd.Context()
			limit, err := a.inputLimit()
			if err != nil {
				return err
			}
			payload, err := readInput(data, a.stdin, limit)
			if err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			actor := a.g.actorName()
			d, err := o.Signal(ctx, actor, operate.SignalRequest{RunID: args[0], Step: args[1], Payload: payload, Enqueue: enqueue})
			if err != nil {
				return opError(err)
			}
			fmt.Fprintf(a.stdout, "run %s: step %s signalled by %s\n", d.Run.ID, d.Step, actor)
			if enqueue {
				return nil
			}
			return o.continueRun(ctx, d.Run)
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the payload: a JSON file, - for stdin, or inline JSON")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only queue the run for workers")
	return cmd
}
