package server_test

import "github.com/pipectl/pipectl/internal/engine"

func domainRunOptions() engine.RunOptions { return engine.RunOptions{} }
