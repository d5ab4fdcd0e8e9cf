package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/schemas"
)

func (a *app) schemaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of pipeline files (for editors)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := a.stdout.Write(schemas.Pipeline)
			return err
		},
	}
}

func (a *app) validateCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "validate [--format text|json|github] PATH...",
		Short: "Check pipeline files and folders without running anything",
		Long: "Checks every rule of the pipeline format that can be checked without running: structure,\n" +
			"the step graph, every expression, every schema, secrets, and that model-proposed data\n" +
			"reaches URLs, headers, commands and env only through constraining schema fields.\n" +
			"Exit 0 when valid, 1 when any file is invalid, 2 on usage errors or unreadable paths.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			switch format {
			case dsl.FormatText, dsl.FormatJSON, dsl.FormatGitHub:
			default:
				return &exitError{code: domain.ExitUsage, err: fmt.Errorf("unknown --format %q: use text, json or github", format)}
			}
			// A validate process lives for a moment and keeps little: collecting garbage less
			// often takes a few milliseconds off every CI and pre-commit call.
			debug.SetGCPercent(400)
			v, err := dsl.NewValidator()
			if err != nil {
				return err
			}
			files, discoverErrs := dsl.Discover(paths)
			results := v.ValidateFiles(files)
			if err := dsl.WriteReport(a.stdout, a.stderr, format, results, discoverErrs); err != nil {
				return err
			}
			sum := dsl.Summarize(results, discoverErrs)
			switch {
			case sum.Unreadable > 0:
				return &exitError{code: domain.ExitUsage}
			case sum.Invalid > 0:
				return &exitError{code: domain.ExitFailed}
			case len(files) == 0:
				return &exitError{code: domain.ExitUsage, err: fmt.Errorf("no pipeline files found in %v", paths)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", dsl.FormatText, "output format: text, json or github")
	return cmd
}
