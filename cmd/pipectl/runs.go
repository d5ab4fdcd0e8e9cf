package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
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
	var follow bool
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "show RUN [--format table|json] [--follow]",
		Short: "Show a run: its state, steps, attempts, model calls, what it holds for review, transitions and notes",
		Long: "RUN is a run id or a unique prefix of at least 8 characters. --follow prints the timeline as\n" +
			"it grows until the run ends or pauses, and exits by its state like pipectl run.",
		Example: "  pipectl runs show 01m8p146433v\n  pipectl runs show 01m8p146433v --format json\n  pipectl runs show 01m8p146433v --follow",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			if follow && format == "json" {
				return usageErrorf("--follow prints text; follow JSON events with the API's /runs/{id}/events")
			}
			ctx := cmd.Context()
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			if follow {
				return a.follow(ctx, a.ops(store, nil), args[0], poll)
			}
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
	cmd.Flags().BoolVar(&follow, "follow", false, "print the timeline as it grows until the run ends or pauses")
	cmd.Flags().DurationVar(&poll, "poll", 500*time.Millisecond, "with --follow, how often to read the ledger")
	return cmd
}

// follow prints a run's timeline as it grows, reading the ledger every poll, until the run
// is in a state only an operator or the clock moves it out of, and exits by that state.
func (a *app) follow(ctx context.Context, ops *operate.Ops, id string, poll time.Duration) error {
	if poll <= 0 {
		return usageErrorf("--poll must be positive")
	}
	printed := map[line]int{}
	header := false
	for {
		doc, run, err := ops.Show(ctx, id)
		if err != nil {
			return opError(err)
		}
		if !header {
			fmt.Fprintf(a.stdout, "run %s of %s, following until it ends or pauses\n", run.ID, run.Pipeline)
			header = true
		}
		for _, l := range unprinted(printed, timeline(*doc)) {
			fmt.Fprintf(a.stdout, "  %s  %s\n", l.when.At.UTC().Format("15:04:05.000"), strings.ReplaceAll(l.text, "\t", "  "))
		}
		switch run.State {
		case domain.StateSucceeded, domain.StateFailedPermanent, domain.StateNeedsReview, domain.StateWaitingExternal:
			if doc.Held != nil {
				writeHeld(a.stdout, doc.Held)
			}
			fmt.Fprintf(a.stdout, "run %s %s\n", run.ID, run.State)
			if next := operate.NextStep(run); next != "" {
				fmt.Fprintf(a.stdout, "  next: %s\n", next)
			}
			if code := exitForState(run.State); code != domain.ExitOK {
				return &exitError{code: code}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return &exitError{code: domain.ExitPaused, err: fmt.Errorf("stopped following run %s, which is %s", run.ID, run.State)}
		case <-time.After(poll):
		}
	}
}

// unprinted returns the lines of a timeline that follow has not printed yet, and counts them
// as printed. Equal lines are counted apart: a timeline may hold the same line twice (two equal
// gate reasons, two equal notes in one millisecond), and `runs show` prints both.
func unprinted(printed map[line]int, lines []line) []line {
	var out []line
	seen := make(map[line]int, len(lines))
	for _, l := range lines {
		if seen[l]++; seen[l] > printed[l] {
			printed[l] = seen[l]
			out = append(out, l)
		}
	}
	return out
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
	lines := timeline(doc)
	if h := doc.Held; h != nil {
		writeHeld(w, h)
	}
	fmt.Fprintln(w, "\ntimeline")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "  %s\t%s\n", l.when.At.UTC().Format("15:04:05.000"), l.text)
	}
	return tw.Flush()
}

// line is one entry of a run's timeline; when says when it happened (when.At) and places it
// (operate.InCausalOrder).
type line struct {
	text string
	when operate.Moment
}

// timeline lists a run's transitions, attempts, notes and model calls (with the gate's
// reasons by path) in the order they happened (operate.InCausalOrder).
func timeline(doc operate.RunDoc) []line {
	var transitions, lines []line
	for _, e := range doc.Events {
		from := e.From
		if from == "" {
			from = "-"
		}
		transitions = append(transitions, line{fmt.Sprintf("%s -> %s\tby %s\t%s", from, e.To, oneLine(e.Actor), oneLine(e.Reason)), operate.Moment{At: e.At, From: e.From, To: e.To}})
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
		verdict := gateVerdict(a.Response)
		if verdict != nil {
			detail = strings.TrimPrefix(detail+", gate "+verdict.Decision, ", ")
		}
		when := operate.Moment{At: a.StartedAt, Finished: a.Outcome != domain.OutcomeRunning}
		lines = append(lines, line{text: fmt.Sprintf("step %s #%d\t%s %dms\t%s", name, a.Attempt, a.Outcome, a.DurationMS, detail), when: when})
		if verdict != nil {
			for _, r := range verdict.Reasons {
				lines = append(lines, line{text: "\t\t  " + reasonLine(r), when: when})
			}
		}
	}
	for _, n := range doc.Notes {
		lines = append(lines, line{text: fmt.Sprintf("note\tby %s\t%s", oneLine(n.Actor), oneLine(n.Text)), when: operate.Moment{At: n.At, Finished: true}})
	}
	for _, c := range doc.ModelCalls {
		verdict := c.Outcome
		if c.Verdict != "" {
			verdict += ", gate " + c.Verdict
		}
		when := operate.Moment{At: c.At, Finished: true}
		lines = append(lines, line{text: fmt.Sprintf("  model call %s #%d re-ask %d\t%s %dms\t%s", c.Step, c.Attempt, c.Reask, verdict, c.LatencyMS, callDetail(c)), when: when})
		var reasons []gate.Reason
		if json.Unmarshal(c.Reasons, &reasons) == nil {
			for _, r := range reasons {
				lines = append(lines, line{text: "\t\t  " + reasonLine(r), when: when})
			}
		}
	}
	return operate.InCausalOrder(transitions, lines, func(l line) operate.Moment { return l.when })
}

// gateVerdict reads a gate step's verdict from its attempt's response, or nil when the
// response is something else (an http or exec result has other fields).
func gateVerdict(resp json.RawMessage) *gate.Verdict {
	var v struct {
		Decision string        `json:"decision"`
		Reasons  []gate.Reason `json:"reasons"`
		Other    any           `json:"status"`
	}
	if len(resp) == 0 || json.Unmarshal(resp, &v) != nil || v.Other != nil {
		return nil
	}
	switch v.Decision {
	case gate.Pass, gate.Reject, gate.Review:
		return &gate.Verdict{Decision: v.Decision, Reasons: v.Reasons}
	}
	return nil
}

// reasonLine is one gate reason: the path of the offending value, the message and the keyword
// or the rule's on_fail.
func reasonLine(r gate.Reason) string {
	path := r.Path
	if path == "" {
		path = "/"
	}
	kind := r.Keyword
	if r.Keyword == "rule" && r.OnFail != "" {
		kind = "rule, on_fail " + r.OnFail
	}
	return fmt.Sprintf("%s: %s (%s)", oneLine(path), oneLine(r.Message), kind)
}

// writeHeld prints what a run in needs_review holds: the proposal as indented JSON, why it was
// held, each rule's verdict, and what approving would do.
func writeHeld(w io.Writer, h *operate.HeldView) {
	name := h.Step
	if h.Item != nil {
		name = fmt.Sprintf("%s[%d]", h.Step, *h.Item)
	}
	fmt.Fprintf(w, "\nheld for review at step %s\n", name)
	if h.Message != "" {
		fmt.Fprintf(w, "  message   %s\n", oneLine(h.Message))
	}
	if len(h.Proposal) > 0 {
		var pretty bytes.Buffer
		if json.Indent(&pretty, h.Proposal, "    ", "  ") != nil {
			pretty.Reset()
			pretty.Write(h.Proposal)
		}
		fmt.Fprintf(w, "  proposal  sha256 %s\n    %s\n", h.ProposalHash, pretty.String())
	}
	if len(h.Reasons) > 0 {
		fmt.Fprintln(w, "  held because")
		for _, r := range h.Reasons {
			fmt.Fprintf(w, "    %s\n", reasonLine(r))
		}
	}
	if len(h.Rules) > 0 {
		fmt.Fprintln(w, "  rules")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, r := range h.Rules {
			fmt.Fprintf(tw, "    %s\t%s\t(on_fail %s)\t%s\n", r.Verdict, oneLine(r.Message), r.OnFail, oneLine(r.Expr))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "  approving %s\n  rejecting dead-letters the run (failed_permanent)\n", h.Approve)
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
