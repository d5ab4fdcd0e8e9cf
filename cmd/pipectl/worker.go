package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/hostlane"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
	"github.com/pipectl/pipectl/internal/worker"
)

func (a *app) submitCommand() *cobra.Command {
	var inputArg, inputsArg, format string
	var noPreflight bool
	var batch int
	cmd := &cobra.Command{
		Use:   "submit FILE (--input FILE|-|JSON | --inputs FILE.jsonl|-) [--no-preflight]",
		Short: "Create a run as queued, for workers; prints its id",
		Long: "Before the run is created, the preflight of pipectl run checks this machine: the secrets,\n" +
			"each llm step's provider and key, each exec command. When workers run elsewhere with keys\n" +
			"and tools this machine lacks, --no-preflight leaves the checks to them.\n\n" +
			"--inputs queues one run per line of a JSON Lines file (or stdin), in batches of one commit,\n" +
			"each line checked and keyed exactly as --input would be. A bad line is refused with its line\n" +
			"number (on stderr) and does not stop the others; a line whose key already has a run is a\n" +
			"duplicate. The summary counts created, duplicates and refused. Exit 0 when no line was\n" +
			"refused, 4 when one was refused by the ledger (a key with another input, the kill switch),\n" +
			"else 1 when one was invalid; 2 when the file cannot be read.",
		Example: "  pipectl submit pipelines/support-triage.yaml --input ticket.json\n" +
			"  pipectl submit pipelines/nightly.yaml --input '{}' --no-preflight\n" +
			"  pipectl submit pipelines/support-triage.yaml --inputs backfill.jsonl --format json",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkFormat(format); err != nil {
				return err
			}
			if inputsArg != "" {
				if inputArg != "" {
					return usageErrorf("--input and --inputs exclude each other: one run, or one run per line")
				}
				return a.submitMany(ctx, args[0], inputsArg, noPreflight, bulkOptions{format: format, batch: batch})
			}
			v, p, input, err := a.pipelineAndInput(args[0], inputArg)
			if err != nil {
				return err
			}
			if err := a.submitPreflight(p, noPreflight); err != nil {
				return err
			}
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			o := a.ops(store, nil)
			o.Validator = v
			res, err := o.Submit(ctx, a.g.actorName(), operate.SubmitRequest{Pipeline: p, Input: input})
			if err != nil {
				return opError(err)
			}
			if format == "json" {
				if err := writeJSON(a.jsonOut, submitted{Duplicate: res.Duplicate, Run: operate.RunViewOf(res.Run)}); err != nil {
					return err
				}
			} else if res.Duplicate {
				fmt.Fprintf(a.stdout, "duplicate: run %s with key %q already exists; it is %s\n", res.Run.ID, res.Run.IdempotencyKey, res.Run.State)
				if next := operate.NextStep(res.Run); next != "" {
					fmt.Fprintf(a.stdout, "  next: %s\n", next)
				}
			} else {
				fmt.Fprintln(a.stdout, res.Run.ID)
			}
			if code := exitForState(res.Run.State); res.Duplicate && code != domain.ExitOK && res.Run.State != domain.StateQueued && res.Run.State != domain.StateProcessing {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&inputArg, "input", "", "run input: a JSON file, - for stdin, or inline JSON")
	cmd.Flags().StringVar(&inputsArg, "inputs", "", "one run input per line: a JSON Lines file, or - for stdin")
	cmd.Flags().StringVar(&format, "format", "table", "table or json (the run, or the summary of --inputs)")
	cmd.Flags().IntVar(&batch, "batch-size", operate.DefaultBatchRuns, fmt.Sprintf("with --inputs, runs per commit (1 to %d)", ledger.MaxBatchRuns))
	cmd.Flags().BoolVar(&noPreflight, "no-preflight", false, "skip the checks of secrets, providers and commands on this machine (workers elsewhere have them)")
	return cmd
}

func (a *app) workerCommand() *cobra.Command {
	var concurrency, maxPerPipeline, hostLanes int
	var pipelines, metricsAddr string
	var leaseTTL, poll, drain time.Duration
	cmd := &cobra.Command{
		Use:   "worker [--concurrency N] [--pipelines a,b] [--metrics-addr :9090]",
		Short: "Claim and execute queued and due runs; drain gracefully on SIGTERM",
		Long: "A worker holds no state of its own: each run's spec and input come from the ledger. Run as\n" +
			"many as the ledger can take (PostgreSQL for several machines). On SIGTERM a worker stops\n" +
			"claiming, lets runs in flight finish for --drain, then hands the rest back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case a.g.actor != "":
				return usageErrorf("--as does not apply to a worker: it records its own identity (its owner id) on everything it does")
			case concurrency < 1:
				return usageErrorf("--concurrency must be at least 1")
			case maxPerPipeline < 0:
				return usageErrorf("--max-per-pipeline must not be negative (0: no cap)")
			case leaseTTL <= 0 || poll <= 0 || drain < 0:
				return usageErrorf("--lease-ttl and --poll must be positive, --drain not negative")
			case hostLanes < -1 || hostLanes > maxHostLanes:
				return usageErrorf("--host-lanes must be -1 (half this host's CPUs), 0 (no lanes) or a number of lanes up to %d", maxHostLanes)
			}
			lanes := hostLaneCount(hostLanes)
			ctx := cmd.Context()
			log, err := a.logger()
			if err != nil {
				return err
			}
			stopProfile, err := startCPUProfile(os.Getenv("PIPECTL_CPUPROFILE"))
			if err != nil {
				return err
			}
			defer stopProfile()
			store, err := a.openLedger(ctx)
			for err != nil && ledger.Unreachable(err) && ctx.Err() == nil {
				// A worker waits for its database, as it does when the connection drops later:
				// one that starts before PostgreSQL, during a restart or while a connection is
				// cut (TestFaultDroppedConnections saw one exit 2) must not give up.
				log.Warn("ledger unreachable; trying again in 2s", "error", err.Error())
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Second):
				}
				store, err = a.openLedger(ctx)
			}
			if err != nil {
				return err
			}
			defer store.Close()
			v, err := dsl.NewValidator()
			if err != nil {
				return err
			}
			providers, err := a.modelProviders("", "")
			if err != nil {
				return err
			}
			metrics := worker.NewMetrics(version)
			eng := a.newEngine(store, v, log, providers, nil)
			// A worker acts as itself: the claims name its owner id, and so does every
			// transition it makes, so the events say which process did what.
			eng.Actor = eng.Owner.String()
			eng.LeaseTTL = leaseTTL
			eng.Observer = redactingObserver{metrics, a.red}
			a.logConfig(log, eng, store, map[string]any{"command": "worker", "concurrency": concurrency, "pipelines": pipelines,
				"max_per_pipeline": maxPerPipeline, "host_lanes": lanes, "poll": poll.String(), "drain": drain.String(), "metrics_addr": metricsAddr})
			if metricsAddr != "" {
				srv := &http.Server{Addr: metricsAddr, Handler: metrics.Handler(), ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error("metrics server", "error", err)
					}
				}()
				defer srv.Close()
			}
			specs := &specCache{v: v}
			w := &worker.Worker{
				Queue: store, Owner: eng.Owner.String(), LeaseTTL: leaseTTL, Concurrency: concurrency, Poll: poll, Log: log, Metrics: metrics,
				Filter: domain.ClaimFilter{Pipelines: splitList(pipelines), MaxPerPipeline: maxPerPipeline},
				Wake:   store.Listen(ctx, log.Warn),
				Run:    a.runner(store, eng, specs),
				Finish: a.finisher(eng, specs),
			}
			if lanes > 0 {
				w.Lanes = hostlane.New("", laneKey(store.Identity(), w.Filter), lanes)
			}
			return w.Serve(ctx, drain)
		},
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", 4, "runs this worker executes at once")
	cmd.Flags().StringVar(&pipelines, "pipelines", "", "only these pipelines (comma-separated)")
	cmd.Flags().IntVar(&maxPerPipeline, "max-per-pipeline", 0, "at most this many runs of one pipeline in processing across all workers (0: no cap)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. :9090")
	cmd.Flags().DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "how long a claim lasts without a heartbeat; a dead worker's runs are taken over after it")
	cmd.Flags().DurationVar(&poll, "poll", time.Second, "how often to look for due runs when no notification arrives")
	cmd.Flags().DurationVar(&drain, "drain", 30*time.Second, "on SIGTERM, how long runs in flight may take to finish before they are handed back")
	cmd.Flags().IntVar(&hostLanes, "host-lanes", -1, "how many workers of this host with the same ledger and pipelines drain runs of pure steps at once (-1: half the CPUs, at least 1; 0: no limit)")
	return cmd
}

// maxHostLanes bounds --host-lanes: a worker waiting for a lane tries each one every 20 ms.
const maxHostLanes = 256

// hostLaneCount is the number of host lanes for --host-lanes: asked, or half this host's
// CPUs (at least one), since a worker that drains keeps two claims in flight, each of which
// keeps about a core busy (executing its runs, or the database writing them); none by default
// where lanes cannot be taken.
func hostLaneCount(asked int) int {
	switch {
	case asked >= 0:
		return asked
	case !hostlane.Supported():
		return 0
	}
	return max(1, runtime.NumCPU()/2)
}

// laneKey names the lanes of the workers that drain the same queue: the same ledger
// (ledger.Store.Identity) and the same claim filter. Workers of other ledgers or pipelines
// drain runs these could not take, so they get lanes of their own.
func laneKey(ledgerIdentity string, f domain.ClaimFilter) string {
	pipelines := slices.Clone(f.Pipelines)
	slices.Sort(pipelines)
	return fmt.Sprintf("%s\x00%s\x00%d", ledgerIdentity, strings.Join(pipelines, ","), f.MaxPerPipeline)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runner executes a claimed run with its stored spec and input; a spec this build cannot parse
// dead-letters the run, a secret this process lacks hands it back.
func (a *app) runner(store *ledger.Store, eng *engine.Engine, specs *specCache) worker.Runner {
	return func(ctx context.Context, r *domain.Run) error {
		p, err := specs.get(r)
		if err != nil {
			return deadLetterUnparsable(ctx, store, eng, r, err)
		}
		in, err := operate.StoredInput(p, r)
		if err != nil {
			return err
		}
		secrets, err := a.resolveSecrets(p)
		if err != nil {
			// Another worker may hold the secret: hand the run back.
			store.ReleaseLease(context.WithoutCancel(ctx), r.ID, eng.Owner.String())
			return err
		}
		started := time.Now()
		after, err := eng.Continue(ctx, p, r, in, engine.RunOptions{Secrets: secrets, Settled: worker.Settled(ctx)})
		if after != nil {
			logRunEnd(eng.Log, after, time.Since(started))
		}
		return err
	}
}

// finisher runs a fresh run of pure steps to its end inside the claim that takes it (see
// engine.Finish); any other run, or one whose spec, input or secrets are not at hand, is left
// to the claim and then to runner, which says what is wrong with it.
func (a *app) finisher(eng *engine.Engine, specs *specCache) func(context.Context, *domain.Run) *domain.Finished {
	return func(ctx context.Context, r *domain.Run) *domain.Finished {
		p, err := specs.get(r)
		if err != nil || !engine.Pure(p) {
			return nil
		}
		in, err := operate.StoredInput(p, r)
		if err != nil {
			return nil
		}
		secrets, err := a.resolveSecrets(p)
		if err != nil {
			return nil
		}
		started := time.Now()
		f := eng.Finish(ctx, p, r, in, engine.RunOptions{Secrets: secrets})
		if f == nil {
			return nil
		}
		told := f.Committed
		f.Committed = func() {
			told()
			logRunEnd(eng.Log, f.Run, time.Since(started), slog.Bool("in_claim", true))
		}
		return f
	}
}

// logRunEnd is the worker's line when a run leaves its hands: finished (succeeded or
// dead-lettered), paused for a person or a signal, or handed back (a retry is due later, or
// the pipeline was disabled). A run that its claim ran to its end says so (in_claim).
func logRunEnd(log *slog.Logger, r *domain.Run, took time.Duration, extra ...slog.Attr) {
	msg := "run handed back"
	switch r.State {
	case domain.StateSucceeded, domain.StateFailedPermanent:
		msg = "run finished"
	case domain.StateNeedsReview, domain.StateWaitingExternal:
		msg = "run paused"
	}
	// Typed attributes: a line per run, and boxing each value for Info's key-value pairs was
	// two fifths of what this line cost a busy worker.
	attrs := make([]slog.Attr, 0, 9+len(extra))
	attrs = append(attrs, slog.String("run_id", r.ID), slog.String("pipeline", r.Pipeline), slog.String("idempotency_key", r.IdempotencyKey),
		slog.String("state", string(r.State)), slog.Int64("duration_ms", took.Milliseconds()))
	if !r.FinishedAt.IsZero() {
		attrs = append(attrs, slog.Int64("run_duration_ms", r.FinishedAt.Sub(r.CreatedAt).Milliseconds()))
	}
	if r.State == domain.StateFailedPermanent {
		attrs = append(attrs, slog.String("failed_step", r.FailedStep), slog.String("error_class", string(r.ErrorClass)), slog.String("error", r.Error))
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, msg, append(attrs, extra...)...)
}

// specCache parses each stored spec once per worker.
type specCache struct {
	v  *dsl.Validator
	mu sync.Mutex
	m  map[string]*domain.Pipeline
}

func (c *specCache) get(r *domain.Run) (*domain.Pipeline, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.m[r.SpecHash]; ok {
		return p, nil
	}
	p, diags := c.v.Parse(r.SpecPath, []byte(r.SpecText))
	if p == nil {
		msg := "invalid"
		if len(diags) > 0 {
			msg = diags[0].String()
		}
		return nil, fmt.Errorf("the stored spec of run %s no longer validates here: %s", r.ID, msg)
	}
	if c.m == nil {
		c.m = map[string]*domain.Pipeline{}
	}
	c.m[r.SpecHash] = p
	return p, nil
}

// deadLetterUnparsable dead-letters a run whose stored spec cannot be executed by this build,
// rather than passing it from worker to worker forever.
func deadLetterUnparsable(ctx context.Context, store interface {
	Transition(context.Context, string, domain.Change) error
}, eng *engine.Engine, r *domain.Run, cause error) error {
	err := store.Transition(context.WithoutCancel(ctx), r.ID, domain.Change{To: domain.StateFailedPermanent, Actor: eng.Actor, Owner: eng.Owner.String(),
		Reason: "dead-lettered: " + cause.Error(), ErrorClass: domain.ClassPermanent, Error: cause.Error()})
	if err != nil {
		return err
	}
	return cause
}

// startCPUProfile writes a CPU profile of this process to path until stop is called, and its
// allocations to path.allocs then (nothing when path is empty): PIPECTL_CPUPROFILE, for
// measuring a worker where it really runs (docs/performance.md). It is not a flag: operators
// have no use for it.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("PIPECTL_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("PIPECTL_CPUPROFILE %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		// Beside it, what the process allocated (go tool pprof -sample_index=alloc_space):
		// allocation is most of what a busy worker's garbage collector costs.
		if a, err := os.Create(path + ".allocs"); err == nil {
			pprof.Lookup("allocs").WriteTo(a, 0)
			a.Close()
		}
	}, nil
}

// submitPreflight checks, unless the caller opted out, that this machine could run p: its
// secrets resolve, and its providers and commands are there. A submit checks once, whether it
// queues one run or a file of them.
func (a *app) submitPreflight(p *domain.Pipeline, skip bool) error {
	if skip {
		return nil
	}
	if _, err := a.resolveSecrets(p); err != nil {
		return &exitError{code: domain.ExitUsage, err: err}
	}
	return a.preflight(p, "", false)
}
