package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

// examples are the Example sections of the commands that do not set their own, by command
// path; TestEveryCommandHasAnExample keeps the table complete.
var examples = map[string]string{
	"pipectl":                       "  pipectl validate pipelines/\n  pipectl run pipelines/support-triage.yaml --input ticket.json\n  pipectl runs show 01m8p146433v",
	"pipectl version":               "  pipectl version\n  pipectl --version",
	"pipectl schema":                "  pipectl schema pipeline > schemas/pipeline.schema.json\n  pipectl schema test > schemas/test.schema.json",
	"pipectl validate":              "  pipectl validate pipelines/\n  pipectl validate --format github pipelines/*.yaml\n  git show :pipelines/triage.yaml | pipectl validate --stdin-filename pipelines/triage.yaml -",
	"pipectl run":                   "  pipectl run pipelines/support-triage.yaml --input ticket.json\n  pipectl run pipelines/support-triage.yaml --input '{\"ticket_id\": \"T-1\"}' --dry-run\n  pipectl run pipelines/support-triage.yaml --input ticket.json --llm-replay recording.json",
	"pipectl runs":                  "  pipectl runs list --state needs_review\n  pipectl runs show 01m8p146433v",
	"pipectl runs list":             "  pipectl runs list\n  pipectl runs list --state failed_permanent --pipeline support-triage --format json",
	"pipectl test":                  "  pipectl test pipelines/\n  pipectl test --adversarial pipelines/support-triage.yaml",
	"pipectl signal":                "  pipectl signal 01m8p146433v wait_for_payment --data payment.json\n  echo '{\"paid\": true}' | pipectl signal 01m8p146433v wait_for_payment --data - --enqueue",
	"pipectl note":                  "  pipectl note 01m8p146433v \"customer called back, INC-4211\"",
	"pipectl dlq":                   "  pipectl dlq list\n  pipectl dlq redrive --pipeline support-triage",
	"pipectl dlq list":              "  pipectl dlq list\n  pipectl dlq list --pipeline support-triage --format json",
	"pipectl dlq redrive":           "  pipectl dlq redrive 01m8p146433v\n  pipectl dlq redrive --pipeline support-triage --enqueue --as oncall",
	"pipectl replay":                "  pipectl replay 01m8p146433v\n  pipectl replay 01m8p146433v --from classify --llm live\n  pipectl replay 01m8p146433v --spec pipelines/support-triage.yaml",
	"pipectl stats":                 "  pipectl stats\n  pipectl stats --since 7d --pipeline support-triage --format json\n  pipectl stats --check   # exit 1 on a breached alert, for cron",
	"pipectl worker":                "  pipectl worker --concurrency 8 --metrics-addr :9090\n  PIPECTL_LEDGER=postgres://pipectl@db/pipectl pipectl worker --pipelines support-triage",
	"pipectl serve":                 "  pipectl serve --addr 127.0.0.1:8080 --pipelines pipelines/",
	"pipectl token":                 "  pipectl token create ci --role operator",
	"pipectl token create":          "  pipectl token create ci --role operator\n  pipectl token create alice --role reviewer",
	"pipectl completion":            "  source <(pipectl completion bash)\n  pipectl completion zsh > \"${fpath[1]}/_pipectl\"",
	"pipectl completion bash":       "  source <(pipectl completion bash)",
	"pipectl completion zsh":        "  pipectl completion zsh > \"${fpath[1]}/_pipectl\"",
	"pipectl completion fish":       "  pipectl completion fish > ~/.config/fish/completions/pipectl.fish",
	"pipectl completion powershell": "  pipectl completion powershell | Out-String | Invoke-Expression",
	"pipectl help":                  "  pipectl help runs show",
}

// finishCommands gives every command of the tree its Example and dynamic completion. It runs
// after the tree is built, so it also reaches commands defined elsewhere.
func (a *app) finishCommands(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		if cmd.Example == "" {
			cmd.Example = examples[cmd.CommandPath()]
		}
		a.completions(cmd)
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completions registers the dynamic completion of a command's arguments and flags: run ids
// (newest first), states, pipelines, the step ids of a run, formats.
func (a *app) completions(cmd *cobra.Command) {
	switch cmd.CommandPath() {
	case "pipectl runs show", "pipectl review", "pipectl note", "pipectl replay":
		cmd.ValidArgsFunction = a.completeArgs(a.completeRun)
	case "pipectl dlq redrive":
		cmd.ValidArgsFunction = func(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return a.runIDs(c.Context(), prefix, domain.StateFailedPermanent), cobra.ShellCompDirectiveNoFileComp
		}
	case "pipectl signal":
		cmd.ValidArgsFunction = func(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			switch len(args) {
			case 0:
				return a.runIDs(c.Context(), prefix, domain.StateWaitingExternal), cobra.ShellCompDirectiveNoFileComp
			case 1:
				return a.stepIDs(c.Context(), args[0], prefix), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	case "pipectl disable", "pipectl enable", "pipectl pipelines history":
		cmd.ValidArgsFunction = a.completeArgs(func(ctx context.Context, prefix string) []string { return a.pipelineNamesIn(ctx, prefix) })
	}
	if f := cmd.Flags().Lookup("state"); f != nil {
		cmd.RegisterFlagCompletionFunc("state", fixed(stateNames()...))
	}
	if f := cmd.Flags().Lookup("pipeline"); f != nil {
		cmd.RegisterFlagCompletionFunc("pipeline", func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return a.pipelineNamesIn(c.Context(), prefix), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if f := cmd.Flags().Lookup("format"); f != nil {
		formats := []string{"table", "json"}
		if cmd.Name() == "validate" {
			formats = []string{"text", "json", "github", "sarif"}
		}
		cmd.RegisterFlagCompletionFunc("format", fixed(formats...))
	}
	if f := cmd.Flags().Lookup("from"); f != nil {
		cmd.RegisterFlagCompletionFunc("from", func(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return a.stepIDs(c.Context(), args[0], prefix), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if f := cmd.Flags().Lookup("llm"); f != nil {
		cmd.RegisterFlagCompletionFunc("llm", fixed("recorded", "live"))
	}
	if cmd.Parent() == nil {
		cmd.RegisterFlagCompletionFunc("log-format", fixed("json", "text"))
	}
}

func fixed(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeArgs completes the first argument only.
func (a *app) completeArgs(f func(ctx context.Context, prefix string) []string) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(c.Context(), prefix), cobra.ShellCompDirectiveNoFileComp
	}
}

func (a *app) completeRun(ctx context.Context, prefix string) []string {
	return a.runIDs(ctx, prefix, "")
}

func stateNames() []string {
	out := make([]string, len(domain.RunStates))
	for i, s := range domain.RunStates {
		out[i] = string(s)
	}
	return out
}

// completionStore opens the ledger for a completion, briefly: a completion must answer fast
// or not at all.
func (a *app) completionStore(ctx context.Context) (*ledger.Store, context.Context, context.CancelFunc, bool) {
	if ctx == nil {
		ctx = context.Background()
	}
	// A completion must not create a ledger where there was none.
	if rest, ok := strings.CutPrefix(a.g.dsn(), "sqlite:"); ok {
		path, _, _ := strings.Cut(rest, "?")
		if _, err := os.Stat(path); err != nil {
			return nil, nil, nil, false
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	store, err := ledger.Open(ctx, a.g.dsn())
	if err != nil {
		cancel()
		return nil, nil, nil, false
	}
	return store, ctx, cancel, true
}

// runIDs are the ids of the newest runs (of a state, when given), newest first, each with its
// pipeline and state as the description.
func (a *app) runIDs(ctx context.Context, prefix string, state domain.RunState) []string {
	store, ctx, cancel, ok := a.completionStore(ctx)
	if !ok {
		return nil
	}
	defer cancel()
	defer store.Close()
	runs, err := store.ListRuns(ctx, ledger.RunFilter{State: state, Limit: 50})
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range runs {
		if strings.HasPrefix(r.ID, prefix) {
			out = append(out, r.ID+"\t"+r.Pipeline+" "+string(r.State)+" "+stamp(r.CreatedAt))
		}
	}
	return out
}

// stepIDs are the step ids of a run's spec.
func (a *app) stepIDs(ctx context.Context, runID, prefix string) []string {
	store, ctx, cancel, ok := a.completionStore(ctx)
	if !ok {
		return nil
	}
	defer cancel()
	defer store.Close()
	ops := a.ops(store, nil)
	r, err := ops.Run(ctx, runID)
	if err != nil {
		return nil
	}
	p, err := ops.Spec(r)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range p.Steps {
		if strings.HasPrefix(s.ID, prefix) {
			out = append(out, s.ID+"\t"+string(s.Type))
		}
	}
	return out
}

// pipelineNamesIn are the pipelines the ledger knows.
func (a *app) pipelineNamesIn(ctx context.Context, prefix string) []string {
	store, ctx, cancel, ok := a.completionStore(ctx)
	if !ok {
		return nil
	}
	defer cancel()
	defer store.Close()
	list, err := a.ops(store, nil).Pipelines(ctx, nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range list {
		if strings.HasPrefix(p.Name, prefix) {
			out = append(out, p.Name)
		}
	}
	return out
}
