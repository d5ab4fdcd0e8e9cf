// Command pipectl runs automation pipelines written as YAML files kept in git.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := hideEnvironment(); err != nil {
		os.Stderr.WriteString("pipectl: cannot make the process non-dumpable: " + err.Error() + "\n")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
