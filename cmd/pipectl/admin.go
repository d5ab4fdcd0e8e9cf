package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/operate"
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
	var reason, dir, format string
	cmd := &cobra.Command{
		Use:   "disable NAME --reason TEXT [--pipelines DIR]",
		Short: "Throw a pipeline's kill switch: new runs are refused, queued ones wait, running ones stop after their current step",
		Long: "The name must be one the ledger knows (a pipeline with a run or a kill switch) or one defined in\n" +
			"the --pipelines folder: a typo is refused with the nearest known name, and nothing is recorded.\n" +
			"Every toggle is kept in the history (pipectl pipelines history), a repeated one too.",
		Example: "  pipectl disable support-triage --reason \"mislabels refunds, INC-4211\"\n" +
			"  pipectl disable nightly-report --reason \"new pipeline, not live yet\" --pipelines pipelines/",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: whoever finds the pipeline off needs to know why")
			}
			return a.toggle(cmd, args[0], true, reason, dir, format)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the pipeline is off (recorded, and shown to everyone refused)")
	cmd.Flags().StringVar(&dir, "pipelines", "", "folder of pipeline files whose names are accepted besides the ledger's")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func (a *app) enableCommand() *cobra.Command {
	var reason, dir, format string
	cmd := &cobra.Command{
		Use:     "enable NAME [--reason TEXT] [--pipelines DIR]",
		Short:   "Reset a pipeline's kill switch",
		Long:    "The name must be one the ledger or the --pipelines folder knows; see pipectl disable.",
		Example: "  pipectl enable support-triage --reason \"fix deployed, INC-4211\"",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.toggle(cmd, args[0], false, reason, dir, format)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why it is back on (recorded)")
	cmd.Flags().StringVar(&dir, "pipelines", "", "folder of pipeline files whose names are accepted besides the ledger's")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func (a *app) toggle(cmd *cobra.Command, name string, disabled bool, reason, dir, format string) error {
	if err := checkFormat(format); err != nil {
		return err
	}
	ctx := cmd.Context()
	var known []string
	if dir != "" {
		var err error
		if known, err = a.pipelineNames(dir); err != nil {
			return err
		}
	}
	store, err := a.openLedger(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := a.ops(store, nil).Toggle(ctx, a.g.actorName(), operate.ToggleRequest{Pipeline: name, Disabled: disabled, Reason: reason, Known: known})
	if err != nil {
		return opError(err)
	}
	if format == "json" {
		return writeJSON(a.jsonOut, res)
	}
	state := switchState(disabled)
	fmt.Fprintf(a.stdout, "pipeline %s %s by %s\n", name, state, oneLine(res.Actor))
	if p := res.Previous; p != nil && res.Unchanged {
		fmt.Fprintf(a.stdout, "it was already %s by %s at %s (%s); both toggles are kept in the history: pipectl pipelines history %s\n",
			state, oneLine(p.Actor), stamp(p.At), quoteReason(p.Reason), name)
	} else if res.Unchanged {
		fmt.Fprintf(a.stdout, "it was not disabled; the toggle is kept in the history: pipectl pipelines history %s\n", name)
	}
	return nil
}

func switchState(disabled bool) string {
	if disabled {
		return "disabled"
	}
	return "enabled"
}

func quoteReason(r string) string {
	if r == "" {
		return "no reason given"
	}
	return fmt.Sprintf("%q", r)
}
