package main

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// TestLedgerFailureExitCode: a run stopped because the ledger could not record its progress
// (TestFaultDiskFull: a full disk under SQLite) exits 2 like a ledger that cannot be opened,
// not 1, which says the run was dead-lettered; it was not, and the same command resumes it.
func TestLedgerFailureExitCode(t *testing.T) {
	processing := &engine.Result{Run: &domain.Run{ID: "01m8pb33ne6bb13nqpn5kzftkw", State: domain.StateProcessing}}
	dead := &engine.Result{Run: &domain.Run{ID: "01m8pb33ne6bb13nqpn5kzftkw", State: domain.StateFailedPermanent}}
	for _, tc := range []struct {
		name string
		res  *engine.Result
		err  error
		want int
	}{
		{"disk full", processing, errors.New("recording the attempt of send: database or disk is full (13)"), domain.ExitUsage},
		{"interrupted", processing, fmt.Errorf("run stopped: %w", engine.ErrInterrupted), domain.ExitFailed},
		{"lease lost", processing, fmt.Errorf("recording: %w", domain.ErrLeaseLost), domain.ExitFailed},
		{"dead-lettered", dead, nil, domain.ExitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &app{stdout: io.Discard, red: domain.NewRedactor(nil)}
			if got := exitCode(a.reportRun(tc.res, tc.err, 0)); got != tc.want {
				t.Fatalf("exit %d, want %d", got, tc.want)
			}
		})
	}
}
