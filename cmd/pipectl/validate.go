package main

import (
	"fmt"
	"runtime/debug"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/schemas"
)

func (a *app) schemaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "schema [pipeline|test]",
		Short: "Print the JSON Schema of pipeline files, or of *.test.yaml files (for editors)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			doc := schemas.Pipeline
			if len(args) == 1 {
				switch args[0] {
				case "pipeline":
				case "test":
					doc = schemas.PipelineTest
				default:
					return usageErrorf("unknown schema %q: use pipeline or test", args[0])
				}
			}
			_, err := a.jsonOut.Write(doc)
			return err
		},
	}
}

func (a *app) validateCommand() *cobra.Command {
	var format, stdinName string
	cmd := &cobra.Command{
		Use:   "validate [--format text|json|github|sarif] PATH... | -",
		Short: "Check pipeline files and folders without running anything",
		Long: "Checks every rule of the pipeline format that can be checked without running: structure,\n" +
			"the step graph, every expression, every schema, secrets, and that model-proposed data\n" +
			"reaches URLs, headers, commands and env only through constraining schema fields.\n" +
			"A PATH of - reads one pipeline from standard input; --stdin-filename names it in the\n" +
			"report and anchors its relative $ref paths.\n" +
			"Exit 0 when valid, 1 when any file is invalid, 2 on usage errors or unreadable paths.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			switch format {
			case dsl.FormatText, dsl.FormatJSON, dsl.FormatGitHub, dsl.FormatSARIF:
			default:
				return usageErrorf("unknown --format %q: use text, json, github or sarif", format)
			}
			stdin := slices.Contains(paths, "-")
			if stdin && len(paths) > 1 {
				return usageErrorf("- (standard input) cannot be combined with other paths")
			}
			if !stdin && cmd.Flags().Changed("stdin-filename") {
				return usageErrorf("--stdin-filename applies only to - (standard input)")
			}
			// A validate process lives for a moment and keeps little: collecting garbage less
			// often takes a few milliseconds off every CI and pre-commit call.
			debug.SetGCPercent(400)
			v, err := a.newValidator()
			if err != nil {
				return err
			}
			var results []dsl.FileResult
			var discoverErrs []error
			if stdin {
				results = []dsl.FileResult{v.ValidateReader(stdinName, a.stdin)}
			} else {
				var files []string
				files, discoverErrs = dsl.Discover(paths)
				results = v.ValidateFiles(files)
			}
			if format == dsl.FormatSARIF {
				err = dsl.WriteSARIF(a.jsonOut, version, results, discoverErrs)
			} else {
				out := a.stdout
				if format == dsl.FormatJSON {
					out = a.jsonOut // exact JSON; text and annotations are for people
				}
				err = dsl.WriteReport(out, a.stderr, format, results, discoverErrs)
			}
			if err != nil {
				return err
			}
			sum := dsl.Summarize(results, discoverErrs)
			switch {
			case sum.Unreadable > 0:
				return &exitError{code: domain.ExitUsage}
			case sum.Invalid > 0:
				return &exitError{code: domain.ExitFailed}
			case len(results) == 0:
				return &exitError{code: domain.ExitUsage, err: fmt.Errorf("no pipeline files found in %v", paths)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", dsl.FormatText, "output format: text, json, github or sarif")
	cmd.Flags().StringVar(&stdinName, "stdin-filename", "<stdin>", "with -, the file name to report and to resolve relative $ref paths from")
	return cmd
}
