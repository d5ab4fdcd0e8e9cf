package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
)

// version is set at build time with -ldflags "-X main.version=..."; without, init takes it
// from the module's build information (go install ...@v1.2.3 records v1.2.3, a build in a git
// checkout a pseudo-version of its commit).
var version string

func init() {
	if version == "" {
		version = buildVersion()
	}
}

// buildVersion is the main module's version from the build information, or the VCS revision
// when the build has no version, or v0.0.0-dev.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "v0.0.0-dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev != "" {
		return "v0.0.0-dev+" + rev + dirty
	}
	return "v0.0.0-dev"
}

// exitError carries the process exit code of a command that did not succeed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// exitCode maps any error to a process exit code; it is the one place that does.
func exitCode(err error) int {
	if err == nil {
		return domain.ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return domain.ExitUsage
}

// app holds what every command needs; nothing is package-level state.
type app struct {
	g     globals
	stdin io.Reader
	// stdout and stderr are for people: secrets redacted, control characters made visible.
	// jsonOut is stdout for machine-readable output: secrets redacted, nothing else changed.
	stdout  io.Writer
	stderr  io.Writer
	jsonOut io.Writer
	// rawErr is the process's stderr itself, for the progress display's cursor control;
	// errTTY says it is a terminal. prog, when set, shows the steps of runs this process
	// executes (run, and the commands that continue a run).
	rawErr io.Writer
	errTTY bool
	prog   *progress
	// red knows every secret this process holds: the pipelines' secrets, the model provider
	// keys and the ledger's password. Logs, the ledger, recordings and output go through it.
	red *domain.Redactor
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	red := domain.NewRedactor(heldSecrets())
	// Everything for stderr (logs, progress, errors) shares one queue, so it keeps its order.
	errOut := newCoalescingWriter(stderr)
	defer errOut.Close()
	a := &app{stdin: stdin, red: red, stdout: &safeWriter{w: stdout, red: red, text: true},
		stderr: &safeWriter{w: errOut, red: red, text: true}, jsonOut: &safeWriter{w: stdout, red: red},
		rawErr: errOut, errTTY: isTerminal(stderr)}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	if a.prog != nil {
		a.prog.Close()
	}
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) || ee.err != nil {
			fmt.Fprintf(a.stderr, "pipectl: %v\n", err)
		}
	}
	return exitCode(err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "pipectl",
		Short:         "Run automation pipelines with schema-gated LLM steps and an auditable run ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetVersionTemplate("pipectl {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: domain.ExitUsage, err: fmt.Errorf("%w\nrun '%s --help' for usage", err, c.CommandPath())}
	})
	a.g.register(root)
	root.PersistentPreRun = func(*cobra.Command, []string) {
		// Flags are parsed now: the ledger's password and the configured providers' keys
		// are secrets of this process from the start, whatever the command.
		a.red.Add(ledger.DSNSecrets(a.g.dsn())...)
		if c, err := a.loadConfig(); err == nil {
			a.red.Add(c.keys()...)
		}
	}
	root.AddCommand(a.versionCommand(), a.initCommand(), a.schemaCommand(), a.validateCommand(), a.runCommand(), a.runsCommand(), a.testCommand(),
		a.reviewCommand(), a.signalCommand(), a.noteCommand(), a.disableCommand(), a.enableCommand(), a.pipelinesCommand(), a.dlqCommand(), a.replayCommand(), a.statsCommand(), a.submitCommand(), a.workerCommand(), a.serveCommand(), a.tokenCommand())
	a.finishCommands(root)
	return root
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the pipectl version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(a.stdout, "pipectl %s\n", version)
			return err
		},
	}
}
