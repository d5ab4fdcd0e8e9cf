package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/pipetest"
)

func (a *app) testCommand() *cobra.Command {
	var adversarial bool
	cmd := &cobra.Command{
		Use:   "test [PATH...]",
		Short: "Run pipeline test cases with scripted model answers and no real side effects",
		Long: "Runs every case of every *.test.yaml file found in the paths (default: the current folder).\n" +
			"Model answers come from the case, reads from its http fixtures; side effects are rendered\n" +
			"and compared with the case's expectations, never sent. Exit 0 when every case passes, 1 otherwise.\n\n" +
			"With --adversarial, each case is run again once for every hostile value (options, traversal,\n" +
			"other hosts, CRLF, shell syntax, confusables, long strings) put in place of each string and\n" +
			"number of its input, model answers and http responses that the value's schema still accepts;\n" +
			"a case fails when such a value changes the shape of a side effect (host, path segments, query\n" +
			"parameters, headers, arguments) or only the engine's run-time gate check stops it.",
		RunE: func(cmd *cobra.Command, paths []string) error {
			if len(paths) == 0 {
				paths = []string{"."}
			}
			files, err := pipetest.Discover(paths)
			if err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			if len(files) == 0 {
				return usageErrorf("no *.test.yaml files in %v", paths)
			}
			v, err := dsl.NewValidator()
			if err != nil {
				return err
			}
			passed, failed := 0, 0
			for _, f := range files {
				suite, err := pipetest.Load(f)
				if err != nil {
					fmt.Fprintf(a.stdout, "FAIL %s\n    %v\n", f, err)
					failed++
					continue
				}
				p, err := a.loadPipeline(v, suite.Pipeline)
				if err != nil {
					fmt.Fprintf(a.stdout, "FAIL %s\n    %v\n", f, err)
					failed += len(suite.Cases)
					continue
				}
				for _, c := range suite.Cases {
					start := time.Now()
					got, err := a.runCase(cmd.Context(), v, p, c)
					var diffs []string
					if err != nil {
						diffs = []string{err.Error()}
					} else {
						diffs = pipetest.Compare(c.Expect, got)
					}
					if adversarial && err == nil {
						found, runs := a.attackCase(cmd.Context(), v, p, c, got)
						diffs = append(diffs, found...)
						fmt.Fprintf(a.stdout, "     %s: %s: %d hostile values the schemas accept, %d findings\n", f, c.Name, runs, len(found))
					}
					took := time.Since(start).Round(time.Millisecond)
					if len(diffs) == 0 {
						passed++
						fmt.Fprintf(a.stdout, "ok   %s: %s (%s)\n", f, c.Name, took)
						continue
					}
					failed++
					fmt.Fprintf(a.stdout, "FAIL %s: %s (%s)\n", f, c.Name, took)
					for _, d := range diffs {
						fmt.Fprintf(a.stdout, "    %s\n", d)
					}
				}
			}
			fmt.Fprintf(a.stdout, "%d passed, %d failed\n", passed, failed)
			if failed > 0 {
				return &exitError{code: domain.ExitFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&adversarial, "adversarial", false, "also run every case with hostile values that pass their schemas, and fail when one changes a side effect's shape")
	return cmd
}

// attackCase runs a case once for every hostile value an attacker could get past the schemas
// (of the inputs, of each model answer's step) and reports each that changed the structure of a
// side effect, or that only the run-time gate check stopped. It returns the findings and how
// many hostile runs it made.
func (a *app) attackCase(ctx context.Context, v *dsl.Validator, p *domain.Pipeline, c pipetest.Case, base pipetest.Observed) ([]string, int) {
	var kept []pipetest.Mutant
	for _, m := range pipetest.Mutants(c) {
		if m.Step == "" && strings.HasPrefix(m.Source, "input") {
			if dsl.ValidateInput(p, m.Case.Input) != nil {
				continue
			}
		} else if m.Step != "" {
			step := p.Step(m.Step)
			if step == nil || step.LLM == nil || step.LLM.OutputSchema == nil {
				continue
			}
			sch, ok := step.LLM.OutputSchema.Compiled.(*jsonschema.Schema)
			if !ok || sch.Validate(m.Doc) != nil {
				continue
			}
		}
		kept = append(kept, m)
	}
	findings := make([][]string, len(kept))
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			store, cleanup, err := caseLedger(ctx)
			if err != nil {
				for range work {
				}
				return
			}
			defer cleanup()
			for i := range work {
				m := kept[i]
				// Mutants share the parts of the case they do not change, and coercion writes
				// into what it is given: each run gets its own copy of the input.
				input, err := copyJSON(m.Case.Input)
				if err != nil {
					continue
				}
				if p.Inputs != nil {
					input = gate.Coerce(p.Inputs.Doc, input)
				}
				got, err := a.runCaseIn(ctx, store, v, p, m.Case, input)
				if err != nil {
					continue // the input no longer fits, or the run could not start: nothing acted
				}
				var found []string
				if strings.Contains(got.Error, "run-time gate check") {
					found = append(found, "only the run-time gate check stopped it: "+got.Error)
				}
				found = append(found, pipetest.StructureDiff(base.Requests, got.Requests)...)
				for _, f := range found {
					findings[i] = append(findings[i], fmt.Sprintf("adversarial: %s = %s: %s", m.Source, m.Value, f))
				}
			}
		}()
	}
	for i := range kept {
		work <- i
	}
	close(work)
	wg.Wait()
	var out []string
	for _, f := range findings {
		out = append(out, f...)
	}
	return out, len(kept)
}

// runCase executes one case in a throw-away ledger, offline: scripted model, fixture reads,
// side effects rendered and recorded but not sent.
func (a *app) runCase(ctx context.Context, v *dsl.Validator, p *domain.Pipeline, c pipetest.Case) (pipetest.Observed, error) {
	var got pipetest.Observed
	if err := dsl.ValidateInput(p, c.Input); err != nil {
		return got, fmt.Errorf("input does not match the pipeline's inputs schema: %w", err)
	}
	input := c.Input
	if p.Inputs != nil {
		input = gate.Coerce(p.Inputs.Doc, input)
	}
	store, cleanup, err := caseLedger(ctx)
	if err != nil {
		return got, err
	}
	defer cleanup()
	return a.runCaseIn(ctx, store, v, p, c, input)
}

// caseLedger is a throw-away ledger for test runs. Dry runs have keys of their own, so many
// runs of one pipeline, even on the same input, can share it.
func caseLedger(ctx context.Context) (*ledger.Store, func(), error) {
	dir, err := os.MkdirTemp("", "pipectl-test-")
	if err != nil {
		return nil, nil, err
	}
	store, err := ledger.Open(ctx, "sqlite:"+filepath.Join(dir, "ledger.db")+"?synchronous=normal")
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return store, func() { store.Close(); os.RemoveAll(dir) }, nil
}

// runCaseIn executes one case in the given ledger; input is the case's input as checked.
func (a *app) runCaseIn(ctx context.Context, store *ledger.Store, v *dsl.Validator, p *domain.Pipeline, c pipetest.Case, input any) (pipetest.Observed, error) {
	var got pipetest.Observed
	answers := map[string][]llm.Response{}
	for step, list := range c.LLM {
		for _, ans := range list {
			text, err := ans.Text()
			if err != nil {
				return got, fmt.Errorf("llm.%s: %w", step, err)
			}
			answers[step] = append(answers[step], llm.Response{Content: text, Refusal: ans.Refusal, FinishReason: ans.FinishReason, PromptTokens: 100, CompletionTokens: 20})
		}
	}
	scripted := llm.NewScripted(answers)
	eng := a.newEngine(store, v, slog.New(slog.NewJSONHandler(io.Discard, nil)), func(string) (llm.Provider, error) { return scripted, nil }, fixtureTransport(c.HTTP))
	eng.UnknownRetryDelay = time.Millisecond
	// A test case's secrets are made up and often short ("t"): they are redacted in the test's
	// own in-memory ledger, not in everything this process prints.
	eng.Redactor = nil
	secrets := map[string]string{}
	for _, name := range p.Secrets {
		secrets[name] = "test-" + strings.ToLower(name)
		if s, ok := c.Secrets[name]; ok {
			secrets[name] = s
		}
	}
	res, err := eng.Run(ctx, p, input, engine.RunOptions{DryRun: true, Offline: true, Secrets: secrets})
	if err != nil && res == nil {
		return got, err
	}
	r := res.Run
	got = pipetest.Observed{State: string(r.State), FailedStep: r.FailedStep, Error: r.Error,
		Verdicts: map[string][]string{}, Requests: map[string][]any{}, Outputs: map[string]any{}}
	calls, err := store.ModelCalls(ctx, r.ID)
	if err != nil {
		return got, err
	}
	for _, call := range calls {
		got.Verdicts[call.StepID] = append(got.Verdicts[call.StepID], call.Outcome)
	}
	attempts, err := store.Attempts(ctx, r.ID)
	if err != nil {
		return got, err
	}
	for _, att := range attempts {
		step := p.Step(att.StepID)
		// A side effect is what a dry run rendered (or a real one sent); a guard's probe is not.
		sent := att.Outcome == domain.OutcomeDryRun || att.Outcome == domain.OutcomeSucceeded
		if step != nil && step.SideEffecting() && sent && len(att.Request) > 0 {
			req, err := domain.DecodeJSON(att.Request)
			if err == nil {
				got.Requests[att.StepID] = append(got.Requests[att.StepID], req)
			}
		}
		if att.ItemIndex == domain.NoItem && len(att.Output) > 0 && (domain.Completed(att.Outcome) || att.Outcome == domain.OutcomeNeedsReview) {
			if out, err := domain.DecodeJSON(att.Output); err == nil {
				got.Outputs[att.StepID] = out
			}
		}
	}
	return got, nil
}

// fixtureTransport answers reads from a case's fixtures and refuses everything else: a
// pipeline test never reaches the network.
func fixtureTransport(fixtures []pipetest.Fixture) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		for _, f := range fixtures {
			method := f.Method
			if method == "" {
				method = http.MethodGet
			}
			if strings.EqualFold(method, req.Method) && f.URL == req.URL.String() {
				status := f.Status
				if status == 0 {
					status = http.StatusOK
				}
				body, _ := json.Marshal(f.Body)
				return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(bytes.NewReader(body)), Request: req}, nil
			}
		}
		msg := fmt.Sprintf(`{"error": "pipectl test: no http fixture for %s %s"}`, req.Method, req.URL)
		return &http.Response{StatusCode: http.StatusNotFound, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(msg)), Request: req}, nil
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// copyJSON is a deep copy of a JSON-shaped value.
func copyJSON(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return domain.DecodeJSON(raw)
}
