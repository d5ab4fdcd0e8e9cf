package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/llm"
	"github.com/pipectl/pipectl/internal/steps"
	"github.com/pipectl/pipectl/internal/worker"
)

// globals are the flags every command accepts.
type globals struct {
	ledgerDSN string
	logFormat string
	config    string
	actor     string
	// maxInputBytes caps --input and --data; 0 defers to pipectl.yaml, then the default.
	maxInputBytes int64
}

func (g *globals) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&g.ledgerDSN, "ledger", "", "run ledger: sqlite:PATH or postgres://... (default $PIPECTL_LEDGER or "+ledger.DefaultDSN+")")
	cmd.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "log format on stderr: json or text (default $PIPECTL_LOG_FORMAT, else text on a terminal and json otherwise)")
	cmd.PersistentFlags().StringVar(&g.config, "config", "", "configuration file (pipectl.yaml)")
	cmd.PersistentFlags().StringVar(&g.actor, "as", "", "name recorded on operator actions (default: the OS user)")
	cmd.PersistentFlags().Int64Var(&g.maxInputBytes, "max-input-bytes", 0, fmt.Sprintf("largest --input, --data or line of --inputs accepted, in bytes (default: limits.max_input_bytes in pipectl.yaml, else %d)", DefaultMaxInputBytes))
}

func (g *globals) dsn() string {
	if g.ledgerDSN != "" {
		return g.ledgerDSN
	}
	if v := os.Getenv("PIPECTL_LEDGER"); v != "" {
		return v
	}
	return ledger.DefaultDSN
}

func (g *globals) actorName() string {
	if g.actor != "" {
		return g.actor
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

func (a *app) logger() (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	switch f := a.logFormat(); f {
	case "json":
		return slog.New(engine.RedactingHandler(slog.NewJSONHandler(a.stderr, opts), a.red)), nil
	case "text":
		if a.prog != nil {
			// The progress display shows every attempt; the log keeps what needs attention.
			opts.Level = slog.LevelWarn
			return slog.New(engine.RedactingHandler(slog.NewTextHandler(a.prog, opts), a.red)), nil
		}
		return slog.New(engine.RedactingHandler(slog.NewTextHandler(a.stderr, opts), a.red)), nil
	default:
		return nil, usageErrorf("unknown log format %q (--log-format or PIPECTL_LOG_FORMAT): use json or text", f)
	}
}

// showProgress turns on the progress display for the runs this process executes, when logs
// are text (a terminal, or --log-format text): live on a terminal, plain lines elsewhere.
func (a *app) showProgress() {
	if a.prog == nil && a.logFormat() == "text" {
		a.prog = a.newProgress(nil)
	}
}

// observer is the progress display, when it is on; a nil interface otherwise.
func (a *app) observer() engine.Observer {
	if a.prog == nil {
		return nil
	}
	return a.prog
}

func usageErrorf(format string, args ...any) error {
	return &exitError{code: domain.ExitUsage, err: fmt.Errorf(format, args...)}
}

// openLedger opens the configured ledger.
func (a *app) openLedger(ctx context.Context) (*ledger.Store, error) {
	s, err := ledger.Open(ctx, a.g.dsn())
	if err != nil {
		return nil, &exitError{code: domain.ExitUsage, err: err}
	}
	return s, nil
}

// newEngine wires the engine to its concrete parts: the ledger, the step executors and the
// expression evaluator. This is the one place that knows them all.
func (a *app) newEngine(store engine.Store, v *dsl.Validator, log *slog.Logger, providers func(string) (llm.Provider, error), transport http.RoundTripper) *engine.Engine {
	gates := &steps.Gates{}
	return &engine.Engine{
		Store:    store,
		Renderer: dsl.NewEvaluator(v.Expressions()),
		Steps: map[domain.StepType]domain.StepExecutor{
			domain.StepTransform: steps.Transform{},
			domain.StepHTTP:      steps.NewHTTP(transport),
			domain.StepExec:      steps.Exec{ChildDir: a.childDir()},
			domain.StepLLM:       steps.LLM{Provider: providers, Gates: gates},
			domain.StepGate:      steps.Gate{Gates: gates},
			domain.StepApproval:  steps.Approval{},
			domain.StepWait:      steps.Wait{},
		},
		Observer: a.observer(),
		Regater:  gates,
		Log:      log,
		Redactor: a.red,
		Owner:    engine.CurrentOwner(),
		Actor:    a.g.actorName(),
		Version:  version,
		LeaseTTL: 30 * time.Second,
	}
}

// childDir is where exec steps record their running children for a takeover on this host:
// beside a SQLite ledger, else in the user's state folder. It is private to the user, who is
// the only one that could kill those children anyway. The exec step creates it when it first
// starts a child.
func (a *app) childDir() string {
	dir := ""
	if rest, ok := strings.CutPrefix(a.g.dsn(), "sqlite:"); ok {
		path, _, _ := strings.Cut(rest, "?")
		if path != "" && path != ":memory:" {
			dir = filepath.Join(filepath.Dir(path), "children")
		}
	}
	if dir == "" {
		base := os.Getenv("XDG_STATE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			base = filepath.Join(home, ".local", "state")
		}
		dir = filepath.Join(base, "pipectl", "children")
	}
	return dir
}

// loadPipeline validates a pipeline file and reports its diagnostics on stderr.
func (a *app) loadPipeline(v *dsl.Validator, path string) (*domain.Pipeline, error) {
	p, diags, err := v.ParseFile(path)
	if err != nil {
		return nil, &exitError{code: domain.ExitUsage, err: err}
	}
	for _, d := range diags {
		fmt.Fprintln(a.stderr, d.String())
	}
	if p == nil {
		return nil, &exitError{code: domain.ExitFailed, err: fmt.Errorf("%s is not a valid pipeline", path)}
	}
	return p, nil
}

// exitForState maps a run's state to the process exit code.
func exitForState(s domain.RunState) int {
	switch s {
	case domain.StateSucceeded:
		return domain.ExitOK
	case domain.StateNeedsReview, domain.StateWaitingExternal, domain.StateQueued, domain.StateProcessing, domain.StateFailedTransient:
		return domain.ExitPaused
	}
	return domain.ExitFailed
}

// modelProviders builds the provider resolver from the configuration and the record and
// replay flags.
func (a *app) modelProviders(recordPath, replayPath string) (func(string) (llm.Provider, error), error) {
	if recordPath != "" && replayPath != "" {
		return nil, usageErrorf("--llm-record and --llm-replay exclude each other")
	}
	var replay llm.Provider
	if replayPath != "" {
		r, err := llm.LoadReplayer(replayPath)
		if err != nil {
			return nil, &exitError{code: domain.ExitUsage, err: err}
		}
		replay = r
	}
	cfg, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	var rec *llm.Recorder
	if recordPath != "" {
		rec = llm.NewRecorder(recordPath)
		rec.Redact = a.red.JSON
	}
	a.red.Add(cfg.keys()...)
	return providerFunc(cfg.providers(), replay, rec), nil
}

// The ledger satisfies the interfaces the engine and the worker define where they use them.
var (
	_ engine.Store = (*ledger.Store)(nil)
	_ worker.Queue = (*ledger.Store)(nil)
)
