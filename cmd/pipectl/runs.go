package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
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
			runs, err := store.ListRuns(cmd.Context(), ledger.RunFilter{State: domain.RunState(state), Pipeline: pipeline, Limit: limit})
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(a.stdout, runsToJSON(runs))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tPIPELINE\tSTATE\tKEY\tCREATED\tUPDATED")
			for _, r := range runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Pipeline, r.State, shorten(r.IdempotencyKey, 40), stamp(r.CreatedAt), ago(r.UpdatedAt))
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
			run, err := store.GetRun(ctx, args[0])
			if errors.Is(err, domain.ErrNotFound) {
				return &exitError{code: domain.ExitFailed, err: fmt.Errorf("no run %s in %s", args[0], store.Description())}
			}
			if err != nil {
				return err
			}
			attempts, err := store.Attempts(ctx, run.ID)
			if err != nil {
				return err
			}
			events, err := store.Events(ctx, run.ID)
			if err != nil {
				return err
			}
			notes, err := store.Notes(ctx, run.ID)
			if err != nil {
				return err
			}
			calls, err := store.ModelCalls(ctx, run.ID)
			if err != nil {
				return err
			}
			doc := showJSON{Run: toRunJSON(run), Steps: summarizeSteps(attempts), Attempts: attemptsJSON(attempts), Events: eventsJSON(events),
				ModelCalls: callsJSON(calls), Notes: notesJSON(notes)}
			if format == "json" {
				doc.Run.Input = run.Input
				return writeJSON(a.stdout, doc)
			}
			return writeShow(a.stdout, run, doc)
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

func statesList() string {
	var s []string
	for _, st := range domain.RunStates {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

type runJSON struct {
	ID             string          `json:"id"`
	Pipeline       string          `json:"pipeline"`
	State          domain.RunState `json:"state"`
	IdempotencyKey string          `json:"idempotency_key"`
	InputHash      string          `json:"input_hash"`
	Input          json.RawMessage `json:"input,omitempty"`
	SpecHash       string          `json:"spec_hash"`
	SpecPath       string          `json:"spec_path,omitempty"`
	Version        string          `json:"pipectl_version"`
	DryRun         bool            `json:"dry_run,omitempty"`
	ReplayOf       string          `json:"replay_of,omitempty"`
	LeaseOwner     string          `json:"lease_owner,omitempty"`
	NextAttemptAt  *time.Time      `json:"next_attempt_at,omitempty"`
	ErrorClass     string          `json:"error_class,omitempty"`
	Error          string          `json:"error,omitempty"`
	FailedStep     string          `json:"failed_step,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	FinishedAt     *time.Time      `json:"finished_at,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func runsToJSON(runs []*domain.Run) []runJSON {
	out := make([]runJSON, len(runs))
	for i, r := range runs {
		out[i] = toRunJSON(r)
	}
	return out
}

func toRunJSON(r *domain.Run) runJSON {
	return runJSON{
		ID: r.ID, Pipeline: r.Pipeline, State: r.State, IdempotencyKey: r.IdempotencyKey, InputHash: r.InputHash,
		SpecHash: r.SpecHash, SpecPath: r.SpecPath, Version: r.Version, DryRun: r.DryRun, ReplayOf: r.ReplayOf,
		LeaseOwner: r.LeaseOwner, NextAttemptAt: optTime(r.NextAttemptAt), ErrorClass: string(r.ErrorClass),
		Error: r.Error, FailedStep: r.FailedStep, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
		FinishedAt: optTime(r.FinishedAt),
	}
}

type stepJSON struct {
	Step     string `json:"step"`
	Outcome  string `json:"outcome"`
	Attempts int    `json:"attempts"`
	Items    int    `json:"items,omitempty"`
}

type attemptJSON struct {
	Step       string          `json:"step"`
	Item       *int            `json:"item,omitempty"`
	Attempt    int             `json:"attempt"`
	StepKey    string          `json:"step_key"`
	Outcome    string          `json:"outcome"`
	StartedAt  time.Time       `json:"started_at"`
	DurationMS int64           `json:"duration_ms"`
	ErrorClass string          `json:"error_class,omitempty"`
	Error      string          `json:"error,omitempty"`
	Request    json.RawMessage `json:"request,omitempty"`
	Response   json.RawMessage `json:"response,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
}

type eventJSON struct {
	From   string    `json:"from,omitempty"`
	To     string    `json:"to"`
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor"`
	At     time.Time `json:"at"`
}

type noteJSON struct {
	Actor string    `json:"actor"`
	Text  string    `json:"text"`
	At    time.Time `json:"at"`
}

type showJSON struct {
	Run        runJSON       `json:"run"`
	Steps      []stepJSON    `json:"steps"`
	Attempts   []attemptJSON `json:"attempts"`
	Events     []eventJSON   `json:"events"`
	ModelCalls []callJSON    `json:"model_calls"`
	Notes      []noteJSON    `json:"notes"`
}

type callJSON struct {
	Step             string          `json:"step"`
	Attempt          int             `json:"attempt"`
	Item             *int            `json:"item,omitempty"`
	Reask            int             `json:"reask"`
	Provider         string          `json:"provider,omitempty"`
	Model            string          `json:"model"`
	Outcome          string          `json:"outcome"`
	Verdict          string          `json:"verdict,omitempty"`
	Reasons          json.RawMessage `json:"reasons,omitempty"`
	FinishReason     string          `json:"finish_reason,omitempty"`
	PromptTokens     int             `json:"prompt_tokens"`
	CompletionTokens int             `json:"completion_tokens"`
	LatencyMS        int64           `json:"latency_ms"`
	Request          json.RawMessage `json:"request"`
	Response         string          `json:"response"`
	Parsed           json.RawMessage `json:"parsed,omitempty"`
	Error            string          `json:"error,omitempty"`
	At               time.Time       `json:"at"`
}

func callsJSON(cs []ledger.CallRecord) []callJSON {
	out := make([]callJSON, len(cs))
	for i, c := range cs {
		out[i] = callJSON{Step: c.StepID, Attempt: c.Attempt, Reask: c.Reask, Provider: c.Provider, Model: c.Model, Outcome: c.Outcome,
			Verdict: c.Verdict, Reasons: c.Reasons, FinishReason: c.FinishReason, PromptTokens: c.PromptTokens,
			CompletionTokens: c.CompletionTokens, LatencyMS: c.LatencyMS, Request: c.Request, Response: c.Response,
			Parsed: c.Parsed, Error: c.Error, At: c.At.UTC()}
		if c.ItemIndex != domain.NoItem {
			item := c.ItemIndex
			out[i].Item = &item
		}
	}
	return out
}

// summarizeSteps gives each step its latest outcome, in the order steps first appeared.
func summarizeSteps(attempts []domain.Attempt) []stepJSON {
	index := map[string]int{}
	out := []stepJSON{}
	for _, a := range attempts {
		i, ok := index[a.StepID]
		if !ok {
			i = len(out)
			index[a.StepID] = i
			out = append(out, stepJSON{Step: a.StepID})
		}
		if a.ItemIndex == domain.NoItem {
			out[i].Outcome = a.Outcome
			if out[i].Items == 0 {
				out[i].Attempts++ // a for_each step's own row collects its items; it is no attempt
			}
		} else {
			out[i].Items = max(out[i].Items, a.ItemIndex+1)
			if out[i].Outcome == "" || out[i].Outcome == domain.OutcomeRunning {
				out[i].Outcome = "in progress"
			}
			out[i].Attempts++
		}
	}
	return out
}

func attemptsJSON(as []domain.Attempt) []attemptJSON {
	out := make([]attemptJSON, len(as))
	for i, a := range as {
		out[i] = attemptJSON{Step: a.StepID, Attempt: a.Attempt, StepKey: a.StepKey, Outcome: a.Outcome, StartedAt: a.StartedAt.UTC(),
			DurationMS: a.DurationMS, ErrorClass: string(a.ErrorClass), Error: a.Error, Request: a.Request, Response: a.Response, Output: a.Output}
		if a.ItemIndex != domain.NoItem {
			item := a.ItemIndex
			out[i].Item = &item
		}
	}
	return out
}

func eventsJSON(es []domain.Event) []eventJSON {
	out := make([]eventJSON, len(es))
	for i, e := range es {
		out[i] = eventJSON{From: string(e.From), To: string(e.To), Reason: e.Reason, Actor: e.Actor, At: e.At.UTC()}
	}
	return out
}

func notesJSON(ns []domain.Note) []noteJSON {
	out := make([]noteJSON, len(ns))
	for i, n := range ns {
		out[i] = noteJSON{Actor: n.Actor, Text: n.Text, At: n.At.UTC()}
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeShow prints a run as a header and one timeline of transitions, attempts and notes.
func writeShow(w io.Writer, r *domain.Run, doc showJSON) error {
	fmt.Fprintf(w, "run       %s\npipeline  %s\nstate     %s\nkey       %s\ninput     sha256 %s\nspec      sha256 %s (%s, pipectl %s)\ncreated   %s\n",
		r.ID, r.Pipeline, r.State, r.IdempotencyKey, shorten(r.InputHash, 16), shorten(r.SpecHash, 16), r.SpecPath, r.Version, stamp(r.CreatedAt))
	if r.ReplayOf != "" {
		fmt.Fprintf(w, "replay of %s\n", r.ReplayOf)
	}
	if r.DryRun {
		fmt.Fprintln(w, "dry run   side effects were rendered, not sent")
	}
	if r.State == domain.StateFailedPermanent {
		fmt.Fprintf(w, "failed    step %s, %s: %s\n", r.FailedStep, r.ErrorClass, r.Error)
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
		lines = append(lines, line{e.At, fmt.Sprintf("%s -> %s\tby %s\t%s", from, e.To, e.Actor, e.Reason)})
	}
	for _, a := range doc.Attempts {
		name := a.Step
		if a.Item != nil {
			name = fmt.Sprintf("%s[%d]", a.Step, *a.Item)
		}
		detail := ""
		if a.Error != "" {
			detail = a.ErrorClass + ": " + firstLine(a.Error)
		}
		lines = append(lines, line{a.StartedAt, fmt.Sprintf("step %s #%d\t%s %dms\t%s", name, a.Attempt, a.Outcome, a.DurationMS, detail)})
	}
	for _, n := range doc.Notes {
		lines = append(lines, line{n.At, fmt.Sprintf("note\tby %s\t%s", n.Actor, n.Text)})
	}
	for _, c := range doc.ModelCalls {
		detail := fmt.Sprintf("%s, %d+%d tokens", c.Model, c.PromptTokens, c.CompletionTokens)
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
