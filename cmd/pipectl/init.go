package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/schemas"
)

// initPipeline is the pipeline pipectl init writes: one gated model step and a pure step, so
// that it runs, tests and passes the adversarial test with no secret and no side effect.
const initPipeline = `# yaml-language-server: $schema=../schemas/pipeline.schema.json
apiVersion: pipectl/v1
kind: Pipeline
name: NAME
description: Classify a short text with a model and gate the answer. Written by pipectl init; edit it.
inputs:
  type: object
  additionalProperties: false
  required: [id, text]
  properties:
    id: {type: string, pattern: "^[A-Za-z0-9][A-Za-z0-9-]{0,40}$"}
    text: {type: string, maxLength: 2000}
idempotency:
  key: ${{ inputs.id }}
steps:
  - id: classify
    type: llm
    model: gpt-4o-mini
    temperature: 0
    system: You classify texts. Answer only with JSON that matches the schema.
    prompt: |
      Classify the sentiment of this text as positive, negative or neutral:
      ${{ inputs.text }}
    output:
      schema:
        type: object
        additionalProperties: false
        required: [sentiment, confidence]
        properties:
          sentiment: {enum: [positive, negative, neutral]}
          confidence: {type: number, minimum: 0, maximum: 1}
    rules:
      - expr: output.confidence >= 0.5
        message: a low-confidence answer needs a person
        on_fail: review
    max_reasks: 1
  - id: result
    type: transform
    output:
      sentiment: ${{ steps.classify.output.sentiment }}
`

const initTest = `# yaml-language-server: $schema=../schemas/pipeline-test.schema.json
# Test cases for NAME.yaml: pipectl test pipelines/ (add --adversarial for hostile inputs).
kind: PipelineTest
cases:
  - name: a confident answer passes the gate
    input: &example {id: example-1, text: I love how fast this is.}
    llm:
      classify:
        - json: {sentiment: positive, confidence: 0.9}
    expect:
      state: succeeded
      verdicts: {classify: [accepted]}
      outputs:
        result: {sentiment: positive}

  - name: an answer outside the schema is re-asked
    input: *example
    llm:
      classify:
        - json: {sentiment: ecstatic, confidence: 0.9}
        - json: {sentiment: positive, confidence: 0.9}
    expect:
      state: succeeded
      verdicts: {classify: [rejected, accepted]}

  - name: a low-confidence answer waits for a person
    input: *example
    llm:
      classify:
        - json: {sentiment: neutral, confidence: 0.2}
    expect:
      state: needs_review
`

// initInput is the input the recording answers, also shown in the next steps.
const initInput = `{"id": "example-1", "text": "I love how fast this is."}`

func (a *app) initCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "init [NAME] [--dir pipelines]",
		Short: "Write a new pipeline, its test file and a model recording that validate and test green at once",
		Long: "Writes DIR/NAME.yaml (one gated llm step and a transform), DIR/NAME.test.yaml, and\n" +
			"DIR/NAME.recording.json (a --llm-replay recording of the example input, so it runs without a\n" +
			"model), and the editor schemas in schemas/ beside DIR when they are missing. NAME defaults to\n" +
			"my-pipeline. An existing file is never overwritten.",
		Example: "  pipectl init support-triage\n  pipectl init nightly-report --dir ops/pipelines",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "my-pipeline"
			if len(args) == 1 {
				name = args[0]
			}
			if !pipelineName.MatchString(name) {
				return usageErrorf("pipeline name %q: use lower-case letters, digits and -, starting with a letter (at most 63)", name)
			}
			spec := filepath.Join(dir, name+".yaml")
			test := filepath.Join(dir, name+".test.yaml")
			rec := filepath.Join(dir, name+".recording.json")
			for _, f := range []string{spec, test, rec} {
				if _, err := os.Stat(f); err == nil {
					return &exitError{code: domain.ExitRefused, err: fmt.Errorf("%s exists; nothing was written", f)}
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			schemaDir := filepath.Join(filepath.Dir(filepath.Clean(dir)), "schemas")
			if err := os.MkdirAll(schemaDir, 0o755); err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			var written []string
			for _, f := range []struct {
				path string
				data []byte
				keep bool
			}{
				{spec, []byte(strings.ReplaceAll(initPipeline, "NAME", name)), false},
				{test, []byte(strings.ReplaceAll(initTest, "NAME", name)), false},
				{filepath.Join(schemaDir, "pipeline.schema.json"), schemas.Pipeline, true},
				{filepath.Join(schemaDir, "pipeline-test.schema.json"), schemas.PipelineTest, true},
			} {
				if err := writeNew(f.path, f.data); err != nil {
					if f.keep && errors.Is(err, fs.ErrExist) {
						continue // the project's own copy stays
					}
					return &exitError{code: domain.ExitUsage, err: err}
				}
				written = append(written, f.path)
			}
			if err := a.recordExample(cmd.Context(), spec, rec); err != nil {
				return err
			}
			written = append(written, rec)
			for _, f := range written {
				fmt.Fprintf(a.stdout, "wrote %s\n", f)
			}
			fmt.Fprintf(a.stdout, "\nnext:\n  pipectl validate %s\n  pipectl test %s\n  pipectl run %s --input '%s' --llm-replay %s\n",
				spec, test, spec, initInput, rec)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "pipelines", "folder of the pipeline files")
	return cmd
}

func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scripted answers every model call with one JSON text.
type scripted string

func (s scripted) Complete(context.Context, llm.Request) (llm.Response, error) {
	return llm.Response{Content: string(s), FinishReason: llm.FinishStop, Model: "recorded-by-pipectl-init"}, nil
}

// recordExample runs the new pipeline once on the example input, in a throw-away ledger, with
// the model's answer scripted and every exchange recorded: the recording then holds the exact
// request the step sends, so --llm-replay answers it.
func (a *app) recordExample(ctx context.Context, spec, rec string) error {
	v, err := a.newValidator()
	if err != nil {
		return err
	}
	p, err := a.loadPipeline(v, spec)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "pipectl-init")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	store, err := ledger.Open(ctx, "sqlite:"+filepath.Join(tmp, "ledger.db"))
	if err != nil {
		return err
	}
	defer store.Close()
	recorder := llm.NewRecorder(rec)
	recorder.Redact = a.red.JSON
	provider := recorder.Wrap(scripted(`{"sentiment": "positive", "confidence": 0.9}`))
	// The example run is pipectl's own business: its attempts are not the user's to read.
	eng := a.newEngine(store, v, slog.New(slog.DiscardHandler), func(string) (llm.Provider, error) { return provider, nil }, nil)
	eng.Observer = nil
	in, err := domain.DecodeJSON([]byte(initInput))
	if err != nil {
		return err
	}
	res, err := eng.Run(ctx, p, in, engine.RunOptions{})
	if err != nil {
		return fmt.Errorf("recording the example: %w", err)
	}
	if res.Run.State != domain.StateSucceeded {
		return fmt.Errorf("recording the example: the run ended %s", res.Run.State)
	}
	return nil
}
