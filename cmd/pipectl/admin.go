package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) noteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "note RUN TEXT",
		Short: "Attach an operator note to a run; notes appear in runs show",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			r, err := o.Note(ctx, a.g.actorName(), args[0], strings.Join(args[1:], " "))
			if err != nil {
				return opError(err)
			}
			fmt.Fprintf(a.stdout, "note added to run %s by %s\n", r.ID, a.g.actorName())
			return nil
		},
	}
}

func (a *app) disableCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "disable NAME --reason TEXT",
		Short: "Throw a pipeline's kill switch: new runs are refused, queued ones wait, running ones stop after their current step",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: whoever finds the pipeline off needs to know why")
			}
			return a.toggle(cmd, args[0], true, reason)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the pipeline is off (recorded, and shown to everyone refused)")
	return cmd
}

func (a *app) enableCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "enable NAME",
		Short: "Reset a pipeline's kill switch",
		Args:  cobra.ExactArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.toggle(cmd, args[0], false, reason) },
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why it is back on (recorded)")
	return cmd
}

func (a *app) toggle(cmd *cobra.Command, name string, disabled bool, reason string) error {
	ctx := cmd.Context()
	store, err := a.openLedger(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := a.ops(store, nil).SetDisabled(ctx, a.g.actorName(), name, disabled, reason); err != nil {
		return opError(err)
	}
	state := "enabled"
	if disabled {
		state = "disabled"
	}
	fmt.Fprintf(a.stdout, "pipeline %s %s by %s\n", name, state, a.g.actorName())
	return nil
}
