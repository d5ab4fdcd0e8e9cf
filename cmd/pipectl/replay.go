package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
)

func (a *app) replayCommand() *cobra.Command {
	var from, specPath, llmMode string
	var enqueue bool
	cmd := &cobra.Command{
		Use:   "replay RUN [--from STEP] [--spec FILE] [--llm recorded|live] [--enqueue]",
		Short: "Run a finished or paused run again: a new run with the stored input, linked to the original",
		Long: "The replay uses the stored input and, unless --spec names a fixed definition, the stored spec.\n" +
			"--from STEP keeps the recorded outputs of the steps STEP does not lead to and re-executes STEP\n" +
			"and everything after it. Step keys are the original's, so targets that honour Idempotency-Key\n" +
			"(and guards) do not apply an effect twice. --llm recorded answers model calls from the\n" +
			"original run's recorded calls; live asks the providers.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if llmMode != "recorded" && llmMode != "live" {
				return usageErrorf("--llm is recorded or live, not %q", llmMode)
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			orig, err := o.run(ctx, args[0])
			if err != nil {
				return err
			}
			p, err := o.spec(orig)
			if err != nil {
				return err
			}
			if specPath != "" {
				v, err := o.validator()
				if err != nil {
					return err
				}
				if p, err = a.loadPipeline(v, specPath); err != nil {
					return err
				}
				if p.Name != orig.Pipeline {
					return usageErrorf("--spec is pipeline %s; run %s belongs to %s", p.Name, orig.ID, orig.Pipeline)
				}
			}
			input, err := o.input(p, orig)
			if err != nil {
				return err
			}
			secrets, err := resolveSecrets(p)
			if err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			var providers func(string) (llm.Provider, error)
			if llmMode == "recorded" {
				calls, err := o.store.ModelCalls(ctx, orig.ID)
				if err != nil {
					return err
				}
				replayer := llm.NewReplayer("the ledger (run "+orig.ID+")", recordingOf(calls))
				providers = func(string) (llm.Provider, error) { return replayer, nil }
			}
			eng, err := o.engine(providers)
			if err != nil {
				return err
			}
			started := time.Now()
			res, err := eng.Replay(ctx, p, orig, input, engine.ReplayOptions{From: from, Enqueue: enqueue}, engine.RunOptions{Secrets: secrets})
			if errors.Is(err, domain.ErrStateConflict) && res == nil {
				return refused("%v", err)
			}
			if errors.Is(err, engine.ErrDisabled) && res == nil {
				return &exitError{code: domain.ExitRefused, err: err}
			}
			if res == nil {
				return &exitError{code: domain.ExitFailed, err: err}
			}
			fmt.Fprintf(a.stdout, "replay of run %s: new run %s with the stored input and spec sha256 %s\n", orig.ID, res.Run.ID, shorten(res.Run.SpecHash, 16))
			if len(res.Reused) > 0 {
				fmt.Fprintf(a.stdout, "  reused the recorded outputs of %s\n", strings.Join(res.Reused, ", "))
			}
			fmt.Fprintln(a.stdout, "  step keys are the original run's: side effects it already applied are deduplicated by their targets and guards")
			if enqueue {
				fmt.Fprintln(a.stdout, "  queued for workers")
				return nil
			}
			return a.reportRun(res.Result, err, time.Since(started))
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "re-execute from this step; earlier steps keep their recorded outputs")
	cmd.Flags().StringVar(&specPath, "spec", "", "run this (fixed) pipeline file instead of the stored spec")
	cmd.Flags().StringVar(&llmMode, "llm", "recorded", "recorded: answer model calls from the original run; live: ask the providers")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only create the replay run, queued for workers")
	return cmd
}

// recordingOf turns a run's recorded model calls into a recording to replay from.
func recordingOf(calls []ledger.CallRecord) llm.Recording {
	rec := llm.Recording{Version: 1}
	for _, c := range calls {
		var req llm.Request
		if err := json.Unmarshal(c.Request, &req); err != nil {
			continue
		}
		ex := llm.Exchange{Key: req.Key(), Request: req}
		if c.Outcome == "error" {
			ex.Error = &llm.RecordedErr{Message: c.Error}
		} else {
			ex.Response = &llm.Response{Content: c.Response, FinishReason: c.FinishReason, PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
		}
		rec.Exchanges = append(rec.Exchanges, ex)
	}
	return rec
}
