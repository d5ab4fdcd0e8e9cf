package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/schedule"
	"github.com/pipectl/pipectl/internal/server"
	"github.com/pipectl/pipectl/internal/worker"
)

func (a *app) serveCommand() *cobra.Command {
	var addr, dir, tlsCert, tlsKey string
	var workers int
	var maxBody int64
	var drain, leaseTTL, poll time.Duration
	cmd := &cobra.Command{
		Use:   "serve [--addr 127.0.0.1:8080] [--pipelines DIR] [--workers N]",
		Short: "Serve the HTTP API, webhooks and schedules of the pipelines in a folder",
		Long: "Serves /api/v1 (bearer tokens from server.tokens in pipectl.yaml), POST /hooks/NAME for\n" +
			"pipelines with a webhook trigger, and creates the runs of scheduled pipelines. With --workers\n" +
			"(by default 2 on SQLite, none on PostgreSQL where pipectl worker processes share the ledger)\n" +
			"it also executes runs. On SIGTERM it stops accepting, lets runs in flight finish for --drain,\n" +
			"then hands the rest back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if (tlsCert == "") != (tlsKey == "") {
				return usageErrorf("--tls-cert and --tls-key go together")
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			if len(cfg.Server.Tokens) == 0 {
				return usageErrorf("no server.tokens in the configuration: the API would admit nobody; create one with pipectl token create NAME --role admin")
			}
			var tokens []server.Token
			for _, t := range cfg.Server.Tokens {
				tokens = append(tokens, server.Token{Name: t.Name, Role: server.Role(t.Role), SHA256: t.SHA256})
			}
			v, err := dsl.NewValidator()
			if err != nil {
				return err
			}
			pipelines, err := a.loadPipelines(v, dir)
			if err != nil {
				return err
			}
			store, err := a.openLedger(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			if workers < 0 {
				workers = 0
				if store.Dialect() == "sqlite" {
					workers = 2
				}
			}
			ops := a.ops(store, map[string]any{"command": "serve", "addr": addr, "pipelines": dir, "workers": workers, "tls": tlsCert != ""})
			ops.Validator = v
			ops.ForbidSelfApproval = !cfg.Server.AllowSelfApproval
			metrics := worker.NewMetrics(version)
			sched := &schedule.Scheduler{Ops: ops, Ledger: store, Log: log}
			byName := map[string]*domain.Pipeline{}
			for _, p := range pipelines {
				byName[p.Name] = p
				if p.Triggers.Schedule != nil {
					sched.Pipelines = append(sched.Pipelines, p)
				}
			}
			if err := sched.Check(); err != nil {
				return &exitError{code: domain.ExitFailed, err: err}
			}
			srv, err := server.New(server.Config{Ops: ops, Pipelines: byName, PipelineDir: dir, Tokens: tokens, Log: log, Ready: store.Ping,
				Registry: metrics.Registry, MaxBody: maxBody, Secret: a.webhookSecret, NextSlot: sched.Next})
			if err != nil {
				return usageErrorf("config: %v", err)
			}
			sched.Lag = srv.ScheduleLag
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return usageErrorf("--addr: %v", err)
			}
			httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
				ErrorLog: nil, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
			httpSrv.RegisterOnShutdown(srv.Stop)
			if tlsCert != "" {
				cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
				if err != nil {
					ln.Close()
					return usageErrorf("--tls-cert/--tls-key: %v", err)
				}
				httpSrv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
				ln = tls.NewListener(ln, httpSrv.TLSConfig)
			}
			var wg sync.WaitGroup
			serveErr := make(chan error, 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					serveErr <- err
				}
			}()
			work, stopWork := context.WithCancel(ctx)
			defer stopWork()
			wg.Add(1)
			go func() {
				defer wg.Done()
				sched.Run(work)
			}()
			if workers > 0 {
				eng, err := ops.Engine("pipectl serve", nil)
				if err != nil {
					return err
				}
				eng.LeaseTTL = leaseTTL
				eng.Observer = redactingObserver{metrics, a.red}
				specs := &specCache{v: v}
				w := &worker.Worker{Queue: store, Owner: eng.Owner.String(), LeaseTTL: leaseTTL, Concurrency: workers, Poll: poll, Log: log,
					Metrics: metrics, Wake: store.Listen(work, log.Warn), Run: a.runner(store, eng, specs), Finish: a.finisher(eng, specs)}
				wg.Add(1)
				go func() {
					defer wg.Done()
					w.Serve(work, drain)
				}()
			}
			scheme := "http"
			if tlsCert != "" {
				scheme = "https"
			}
			log.Info("serving", "url", scheme+"://"+ln.Addr().String(), "pipelines", len(pipelines), "scheduled", len(sched.Pipelines), "workers", workers)
			var failed error
			select {
			case <-ctx.Done():
			case failed = <-serveErr:
			}
			log.Info("shutting down", "drain_timeout", drain.String())
			stopWork()
			shutCtx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			if err := httpSrv.Shutdown(shutCtx); err != nil {
				httpSrv.Close()
			}
			wg.Wait()
			log.Info("stopped")
			return failed
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	cmd.Flags().StringVar(&dir, "pipelines", "pipelines/", "folder of the pipelines to serve")
	cmd.Flags().IntVar(&workers, "workers", -1, "runs executed at once in this process (default: 2 on SQLite, 0 on PostgreSQL)")
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "and this private key (PEM)")
	cmd.Flags().Int64Var(&maxBody, "max-body", 1<<20, "largest request body in bytes")
	cmd.Flags().DurationVar(&drain, "drain", 30*time.Second, "on SIGTERM, how long requests and runs in flight may take to finish")
	cmd.Flags().DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "how long a claim lasts without a heartbeat")
	cmd.Flags().DurationVar(&poll, "poll", time.Second, "how often the in-process worker looks for due runs without a notification")
	return cmd
}

// webhookSecret reads a webhook's signing secret from the environment; the value joins the
// redacted ones, like every secret.
func (a *app) webhookSecret(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	if ok && v != "" {
		a.red.Add(v)
	}
	return v, ok
}

// loadPipelines validates every pipeline in a folder; the server refuses to start on an
// invalid one or on two files with one name.
func (a *app) loadPipelines(v *dsl.Validator, dir string) ([]*domain.Pipeline, error) {
	files, errs := dsl.Discover([]string{dir})
	if len(errs) > 0 {
		return nil, &exitError{code: domain.ExitUsage, err: fmt.Errorf("--pipelines: %w", errors.Join(errs...))}
	}
	var out []*domain.Pipeline
	seen := map[string]string{}
	for _, f := range files {
		p, err := a.loadPipeline(v, f)
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[p.Name]; dup {
			return nil, &exitError{code: domain.ExitFailed, err: fmt.Errorf("%s and %s both define pipeline %s", prev, f, p.Name)}
		}
		seen[p.Name] = f
		out = append(out, p)
	}
	return out, nil
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

func (a *app) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Bearer tokens for pipectl serve"}
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role viewer|reviewer|operator|admin",
		Short: "Print a new random token once, and the line that admits it in pipectl.yaml",
		Long: "The token is shown once and stored nowhere: pipectl.yaml keeps only its SHA-256. The name is\n" +
			"recorded as the actor of everything the token does.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !tokenName.MatchString(args[0]) {
				return usageErrorf("token name %q: use 1 to 64 letters, digits and . _ @ -", args[0])
			}
			if !server.Role(role).Valid() {
				return usageErrorf("--role is viewer, reviewer, operator or admin, not %q", role)
			}
			tok, sum, err := server.NewToken()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "token (shown once; give it to %s and keep it secret):\n  %s\n\nadd to pipectl.yaml under server.tokens:\n  - {name: %s, role: %s, sha256: %s}\n", args[0], tok, args[0], role, sum)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, reviewer, operator or admin")
	cmd.AddCommand(create)
	return cmd
}
