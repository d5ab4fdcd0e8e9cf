package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
)

func (a *app) pipelinesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "pipelines",
		Short:   "The pipelines the ledger knows, their kill switches and its history",
		Example: "  pipectl pipelines list\n  pipectl pipelines history support-triage",
	}
	cmd.AddCommand(a.pipelinesListCommand(), a.pipelinesHistoryCommand())
	return cmd
}

func (a *app) pipelinesListCommand() *cobra.Command {
	var dir, format string
	cmd := &cobra.Command{
		Use:   "list [--pipelines DIR] [--format table|json]",
		Short: "List pipelines: enabled or not, by whom, why and since when, last run, triggers",
		Long: "Lists every pipeline with a run or a kill switch in the ledger, and with --pipelines the ones\n" +
			"a folder defines (source \"folder\" when the ledger has never seen them). Triggers come from\n" +
			"the folder's file when given, else from the spec of the pipeline's newest run.",
		Example: "  pipectl pipelines list\n  pipectl pipelines list --pipelines pipelines/ --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			ctx := cmd.Context()
			var folder []*domain.Pipeline
			if dir != "" {
				var err error
				if folder, err = a.folderPipelines(dir); err != nil {
					return err
				}
			}
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			list, err := a.ops(store, nil).Pipelines(ctx, folder)
			if err != nil {
				return opError(err)
			}
			if format == "json" {
				return writeJSON(a.jsonOut, list)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PIPELINE\tENABLED\tBY\tWHY\tSINCE\tLAST RUN\tTRIGGERS")
			for _, p := range list {
				enabled := "yes"
				if !p.Enabled {
					enabled = "NO"
				}
				since, last := "-", "-"
				if p.Since != nil {
					since = stamp(*p.Since)
				}
				if p.LastRun != nil {
					last = stamp(*p.LastRun)
				}
				triggers := strings.Join(p.Triggers, ", ")
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, enabled, dash(oneLine(p.By)), dash(shorten(oneLine(p.Why), 50)), since, last, dash(triggers))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dir, "pipelines", "", "also list the pipelines this folder defines")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func (a *app) pipelinesHistoryCommand() *cobra.Command {
	var format string
	var limit int
	cmd := &cobra.Command{
		Use:     "history [NAME] [--limit N] [--format table|json]",
		Short:   "Every toggle of the kill switches (or of one pipeline's), newest first",
		Example: "  pipectl pipelines history\n  pipectl pipelines history support-triage --format json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			ctx := cmd.Context()
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			hist, err := a.ops(store, nil).SwitchHistory(ctx, name, limit)
			if err != nil {
				return opError(err)
			}
			if format == "json" {
				return writeJSON(a.jsonOut, hist)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AT\tPIPELINE\tSWITCH\tBY\tWHY")
			for _, h := range hist {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", stamp(h.At), h.Pipeline, switchState(h.Disabled), oneLine(h.Actor), dash(oneLine(h.Reason)))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many toggles (0: all)")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var pipelineName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// pipelineNames reads the names the pipeline files of a folder declare. It reads only the
// name field: a kill switch must be throwable while a file is broken, which is when it is
// needed most.
func (a *app) pipelineNames(dir string) ([]string, error) {
	files, errs := dsl.Discover([]string{dir})
	if len(errs) > 0 {
		return nil, &exitError{code: domain.ExitUsage, err: fmt.Errorf("--pipelines: %w", errors.Join(errs...))}
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, &exitError{code: domain.ExitUsage, err: fmt.Errorf("--pipelines: %w", err)}
		}
		var doc struct {
			Name string `yaml:"name"`
		}
		if yaml.Unmarshal(b, &doc) == nil && pipelineName.MatchString(doc.Name) {
			names = append(names, doc.Name)
		}
	}
	return names, nil
}

// folderPipelines parses the pipelines of a folder for a listing; an invalid file is named on
// stderr and left out rather than hiding the others.
func (a *app) folderPipelines(dir string) ([]*domain.Pipeline, error) {
	files, errs := dsl.Discover([]string{dir})
	if len(errs) > 0 {
		return nil, &exitError{code: domain.ExitUsage, err: fmt.Errorf("--pipelines: %w", errors.Join(errs...))}
	}
	v, err := dsl.NewValidator()
	if err != nil {
		return nil, err
	}
	var out []*domain.Pipeline
	for _, f := range files {
		p, _, err := v.ParseFile(f)
		if err != nil || p == nil {
			fmt.Fprintf(a.stderr, "pipectl: %s is left out: it does not validate (pipectl validate %s)\n", f, f)
			continue
		}
		out = append(out, p)
	}
	return out, nil
}
