package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

func (a *app) runCommand() *cobra.Command {
	var inputArg, recordPath, replayPath string
	var dryRun, acceptSpecChange bool
	cmd := &cobra.Command{
		Use:   "run FILE --input FILE|-|JSON [--dry-run]",
		Short: "Create a run and execute it in this process until it ends or pauses",
		Long: "Creates the run for the input (or finds the one with the same idempotency key) and executes it.\n" +
			"Exit 0 succeeded, 1 failed (dead-lettered) or invalid, 2 usage, 3 paused or live elsewhere,\n" +
			"4 refused (idempotency key reused with another input, or the run was created from another\n" +
			"version of the spec: see --accept-spec-change).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a.showProgress()
			if _, err := a.logger(); err != nil {
				return err
			}
			v, p, input, err := a.pipelineAndInput(args[0], inputArg)
			if err != nil {
				return err
			}
			secrets, err := a.resolveSecrets(p)
			if err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			if err := a.preflight(p, replayPath, dryRun); err != nil {
				return err
			}
			providers, err := a.modelProviders(recordPath, replayPath)
			if err != nil {
				return err
			}
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			o := a.ops(store, map[string]any{"pipeline": p.Name, "file": args[0], "dry_run": dryRun})
			o.Validator = v
			started := time.Now()
			res, err := o.Start(ctx, a.g.actorName(), p, input, providers, engine.RunOptions{Secrets: secrets, DryRun: dryRun, AcceptSpecChange: acceptSpecChange})
			return a.reportRun(res, err, time.Since(started))
		},
	}
	cmd.Flags().StringVar(&inputArg, "input", "", "run input: a JSON file, - for stdin, or inline JSON")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "execute up to side effects, which are rendered and recorded but not sent")
	cmd.Flags().BoolVar(&acceptSpecChange, "accept-spec-change", false, "continue an existing run under this file although it was created from another version of it; every recorded output is gated again first")
	cmd.Flags().StringVar(&recordPath, "llm-record", "", "write every model exchange of the run to this file")
	cmd.Flags().StringVar(&replayPath, "llm-replay", "", "answer model calls from a recording; a request it lacks fails the step")
	return cmd
}

// pipelineAndInput validates a pipeline file and reads the --input for it: checked against the
// inputs schema, with numbers as the schema declares them.
func (a *app) pipelineAndInput(path, inputArg string) (*dsl.Validator, *domain.Pipeline, any, error) {
	if inputArg == "" {
		return nil, nil, nil, usageErrorf("--input is required: a JSON file, - for stdin, or inline JSON")
	}
	v, err := a.newValidator()
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := a.loadPipeline(v, path)
	if err != nil {
		return nil, nil, nil, err
	}
	limit, err := a.inputLimit()
	if err != nil {
		return nil, nil, nil, err
	}
	input, err := readInput(inputArg, a.stdin, limit)
	if err != nil {
		return nil, nil, nil, &exitError{code: domain.ExitUsage, err: err}
	}
	if input, err = operate.CheckInput(p, input); err != nil {
		return nil, nil, nil, opError(err)
	}
	return v, p, input, nil
}

// reportRun prints the outcome of a run and maps it to the exit code.
func (a *app) reportRun(res *engine.Result, err error, took time.Duration) error {
	switch {
	case errors.Is(err, engine.ErrIdempotencyConflict), errors.Is(err, engine.ErrSpecChanged):
		return &exitError{code: domain.ExitRefused, err: err}
	case errors.Is(err, engine.ErrDisabled) && (res == nil || res.Run == nil):
		return &exitError{code: domain.ExitRefused, err: err}
	case errors.Is(err, engine.ErrDisabled):
		fmt.Fprintf(a.stdout, "run %s stopped and waits: %v\n", res.Run.ID, err)
		return &exitError{code: domain.ExitPaused, err: err}
	case errors.Is(err, engine.ErrLiveElsewhere):
		fmt.Fprintf(a.stdout, "run %s is live under another process\n", res.Run.ID)
		return &exitError{code: domain.ExitPaused, err: err}
	case err != nil && res == nil:
		return &exitError{code: domain.ExitFailed, err: err}
	case err != nil && res.Run != nil && res.Run.State == domain.StateProcessing &&
		!errors.Is(err, engine.ErrInterrupted) && !errors.Is(err, domain.ErrLeaseLost):
		// The ledger could not record the run's progress (a full disk, an unreachable
		// database): the run was not dead-lettered, and it waits to be resumed. Like a ledger
		// that cannot be opened, that is exit 2, not 1.
		return &exitError{code: domain.ExitUsage, err: fmt.Errorf("%w\nrun %s did not finish; once the ledger can be written again, the same command resumes it", err, res.Run.ID)}
	}
	r := res.Run
	switch {
	case res.Duplicate && !res.Resumed && err == nil && r.State != domain.StateProcessing:
		fmt.Fprintf(a.stdout, "duplicate: run %s with key %q already exists; it is %s\n", r.ID, r.IdempotencyKey, r.State)
		if next := operate.NextStep(r); next != "" {
			fmt.Fprintf(a.stdout, "  next: %s\n", next)
		}
	case res.Resumed:
		fmt.Fprintf(a.stdout, "run %s resumed and is %s (%s)\n", r.ID, r.State, took.Round(time.Millisecond))
	default:
		fmt.Fprintf(a.stdout, "run %s %s (%s)\n", r.ID, r.State, took.Round(time.Millisecond))
	}
	if r.State == domain.StateFailedPermanent {
		fmt.Fprintf(a.stdout, "  failed step %s (%s): %s\n", r.FailedStep, r.ErrorClass, oneLine(r.Error))
	}
	if err != nil {
		return &exitError{code: domain.ExitFailed, err: err}
	}
	if code := exitForState(r.State); code != domain.ExitOK {
		return &exitError{code: code}
	}
	return nil
}

// DefaultMaxInputBytes caps a run input (--input) and a signal payload (--data) unless
// --max-input-bytes or limits.max_input_bytes in pipectl.yaml says otherwise. Decoded, a JSON
// document takes several times its size in memory, and the ledger stores it whole.
const DefaultMaxInputBytes = 16 << 20

// errTooLarge marks data over its cap.
var errTooLarge = errors.New("refused without reading further")

// inputLimit is the cap on --input and --data: the flag, else the configuration, else the
// default.
func (a *app) inputLimit() (int64, error) {
	if a.g.maxInputBytes < 0 {
		return 0, usageErrorf("--max-input-bytes must not be negative")
	}
	if a.g.maxInputBytes > 0 {
		return a.g.maxInputBytes, nil
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return 0, err
	}
	if cfg.Limits.MaxInputBytes > 0 {
		return cfg.Limits.MaxInputBytes, nil
	}
	return DefaultMaxInputBytes, nil
}

// readCapped reads at most limit bytes of a file; a larger file is refused without being read
// further, so memory stays bounded whatever its size.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllCapped(f, path, limit)
}

func readAllCapped(r io.Reader, name string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", name, limit, errTooLarge)
	}
	return data, nil
}

// readInput reads --input: - for stdin, inline JSON when it starts with { or [, else a file.
// All three are held to the same cap.
func readInput(arg string, stdin io.Reader, limit int64) (any, error) {
	var data []byte
	var err error
	trimmed := strings.TrimSpace(arg)
	switch {
	case arg == "-":
		data, err = readAllCapped(stdin, "stdin", limit)
	case strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "["):
		data, err = readAllCapped(strings.NewReader(arg), "the inline input", limit)
	default:
		data, err = readCapped(arg, limit)
	}
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("input: %w (raise the cap with --max-input-bytes or limits.max_input_bytes in pipectl.yaml)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	v, err := domain.DecodeJSON(data)
	if err != nil {
		name := arg
		switch {
		case arg == "-":
			name = "stdin"
		case strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "["):
			name = "--input"
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(data, int(se.Offset))
			return nil, fmt.Errorf("%s:%d:%d: input is not JSON: %v", name, line, col, err)
		}
		return nil, fmt.Errorf("%s: input is not JSON: %w", name, err)
	}
	return v, nil
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int) (int, int) {
	off = min(max(off, 0), len(data))
	line := 1 + strings.Count(string(data[:off]), "\n")
	return line, off - strings.LastIndex(string(data[:off]), "\n")
}

// resolveSecrets reads the declared secrets from the environment; a missing one refuses the
// run before anything happens.
func (a *app) resolveSecrets(p *domain.Pipeline) (map[string]string, error) {
	out := map[string]string{}
	var missing []string
	for _, name := range p.Secrets {
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			missing = append(missing, name)
			continue
		}
		out[name] = v
		a.red.Add(v)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("pipeline %s needs the secret(s) %s in the environment", p.Name, strings.Join(missing, ", "))
	}
	return out, nil
}

// logConfig logs the effective configuration once, with secrets and passwords redacted.
func (a *app) logConfig(log interface {
	Info(msg string, args ...any)
}, eng *engine.Engine, store *ledger.Store, extra map[string]any) {
	args := []any{"version", version, "ledger", store.Description(), "owner", eng.Owner.String(), "actor", eng.Actor,
		"lease_ttl", eng.LeaseTTL.String(), "log_format", a.logFormat()}
	for k, v := range extra {
		args = append(args, k, v)
	}
	log.Info("effective configuration", args...)
}
