package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

func (a *app) runsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "runs", Short: "Inspect the run ledger"}
	cmd.AddCommand(a.runsListCommand(), a.runsShowCommand())
	return cmd
}

func (a *app) runsListCommand() *cobra.Command {
	var state, pipeline, format string
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--state S] [--pipeline P] [--limit N] [--format table|json]",
		Short: "List runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" && !domain.RunState(state).Valid() {
				return usageErrorf("unknown --state %q; states: %s", state, statesList())
			}
			if err := checkFormat(format); err != nil {
				return err
			}
			store, err := a.openLedger(cmd.Context())
			if err != nil {
				return err
			}
			defer store.Close()
			ops := a.ops(store, nil)
			if pipeline != "" {
				if err := ops.CheckPipeline(cmd.Context(), pipeline, nil); err != nil {
					return opError(err)
				}
			}
			runs, err := ops.List(cmd.Context(), ledger.RunFilter{State: domain.RunState(state), Pipeline: pipeline, Limit: limit})
			if err != nil {
				return opError(err)
			}
			if format == "json" {
				return writeJSON(a.jsonOut, operate.RunViews(runs))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tPIPELINE\tSTATE\tKEY\tCREATED\tUPDATED")
			for _, r := range runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Pipeline, r.State, shorten(oneLine(r.IdempotencyKey), 40), stamp(r.CreatedAt), ago(r.UpdatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only runs in this state")
	cmd.Flags().StringVar(&pipeline, "pipeline", "", "only runs of this pipeline")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many runs (0: all)")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func (a *app) runsShowCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "show RUN [--format table|json]",
		Short: "Show a run: its state, steps, attempts, transitions and notes",
		Args:  cobra.ExactArgs(1),
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
			doc, run, err := a.ops(store, nil).Show(ctx, args[0])
			if err != nil {
				return opError(err)
			}
			if format == "json" {
				return writeJSON(a.jsonOut, doc)
			}
			return writeShow(a.stdout, run, *doc)
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func checkFormat(f string) error {
	if f != "table" && f != "json" {
		return usageErrorf("unknown --format %q: use table or json", f)
	}
	return nil
}

func statesList() string { return operate.StatesList() }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeShow prints a run as a header and one timeline of transitions, attempts and notes.
func writeShow(w io.Writer, r *domain.Run, doc operate.RunDoc) error {
	fmt.Fprintf(w, "run       %s\npipeline  %s\nstate     %s\nkey       %s\ninput     sha256 %s\nspec      sha256 %s (%s, pipectl %s)\ncreated   %s\n",
		r.ID, r.Pipeline, r.State, oneLine(r.IdempotencyKey), shorten(r.InputHash, 16), shorten(r.SpecHash, 16), r.SpecPath, r.Version, stamp(r.CreatedAt))
	if r.ReplayOf != "" {
		fmt.Fprintf(w, "replay of %s\n", r.ReplayOf)
	}
	if r.DryRun {
		fmt.Fprintln(w, "dry run   side effects were rendered, not sent")
	}
	if r.State == domain.StateFailedPermanent {
		fmt.Fprintf(w, "failed    step %s, %s: %s\n", r.FailedStep, r.ErrorClass, oneLine(r.Error))
	}
	if r.State == domain.StateFailedTransient {
		fmt.Fprintf(w, "retry at  %s\n", stamp(r.NextAttemptAt))
	}
	fmt.Fprintln(w, "\nsteps")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range doc.Steps {
		items := ""
		if s.Items > 0 {
			items = fmt.Sprintf("%d items", s.Items)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d attempt(s)\t%s\n", s.Step, s.Outcome, s.Attempts, items)
	}
	tw.Flush()
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, e := range doc.Events {
		from := e.From
		if from == "" {
			from = "-"
		}
		lines = append(lines, line{e.At, fmt.Sprintf("%s -> %s\tby %s\t%s", from, e.To, oneLine(e.Actor), oneLine(e.Reason))})
	}
	for _, a := range doc.Attempts {
		name := a.Step
		if a.Item != nil {
			name = fmt.Sprintf("%s[%d]", a.Step, *a.Item)
		}
		detail := ""
		if a.Error != "" {
			detail = a.ErrorClass + ": " + oneLine(firstLine(a.Error))
		}
		lines = append(lines, line{a.StartedAt, fmt.Sprintf("step %s #%d\t%s %dms\t%s", name, a.Attempt, a.Outcome, a.DurationMS, detail)})
	}
	for _, n := range doc.Notes {
		lines = append(lines, line{n.At, fmt.Sprintf("note\tby %s\t%s", oneLine(n.Actor), oneLine(n.Text))})
	}
	for _, c := range doc.ModelCalls {
		detail := callDetail(c)
		if len(c.Reasons) > 0 {
			detail += " " + shorten(string(c.Reasons), 160)
		}
		lines = append(lines, line{c.At, fmt.Sprintf("  model call %s #%d re-ask %d\t%s %dms\t%s", c.Step, c.Attempt, c.Reask, c.Outcome, c.LatencyMS, detail)})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	fmt.Fprintln(w, "\ntimeline")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "  %s\t%s\n", l.at.UTC().Format("15:04:05.000"), l.text)
	}
	return tw.Flush()
}

// callDetail is a model call's line in the timeline: the model (and the one that answered, when
// the provider names another), tokens, and the provider's request id and processing time.
func callDetail(c operate.CallView) string {
	var b strings.Builder
	b.WriteString(c.Model)
	if c.ResponseModel != "" && c.ResponseModel != c.Model {
		fmt.Fprintf(&b, " (answered by %s)", c.ResponseModel)
	}
	fmt.Fprintf(&b, ", %d+%d tokens", c.PromptTokens, c.CompletionTokens)
	if c.ReasoningTokens != nil && *c.ReasoningTokens > 0 {
		fmt.Fprintf(&b, " (%d reasoning)", *c.ReasoningTokens)
	}
	if c.RequestID != "" {
		fmt.Fprintf(&b, ", request %s", c.RequestID)
	}
	if c.ProcessingMS != nil {
		fmt.Fprintf(&b, ", provider %dms", *c.ProcessingMS)
	}
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
