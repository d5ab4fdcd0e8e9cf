package server_test

import (
	"runtime"

	"github.com/pipectl/pipectl/internal/engine"
)

func domainRunOptions() engine.RunOptions { return engine.RunOptions{} }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
