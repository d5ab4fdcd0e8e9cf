// Command pipectl runs automation pipelines written as YAML files kept in git.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	// Imported for its init, which runs before the libraries' own (it depends on almost
	// nothing): their start-up allocations then land on huge pages.
	_ "github.com/pipectl/pipectl/internal/hugeheap"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
