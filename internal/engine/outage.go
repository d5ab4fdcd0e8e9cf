package engine

import (
	"context"
	"errors"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// retrying runs a ledger write again while it fails because the database cannot be reached
// (a restart or failover of PostgreSQL, a dropped connection) and the driver says the
// transaction was not committed. Without this, one failed commit during a restart of a second
// made the worker drop the run, which then waited for its lease to expire (found by
// TestFaultPostgresRestart). Trying again never applies a write twice: should the first try
// have been committed after all (the fault suite saw a few "conn closed" that had), the ledger's
// own conditions refuse the second (the attempt is no longer running, the run has moved on),
// and the run is left to the next owner as before. It gives up after one lease TTL, or when ctx
// ends (the process stops, or the lease was lost).
func (s *session) retrying(ctx context.Context, write func() error) error {
	deadline := time.Now().Add(s.e.leaseTTL())
	delay := 20 * time.Millisecond
	for {
		err := write()
		if err == nil || !errors.Is(err, domain.ErrLedgerUnavailable) || time.Now().After(deadline) {
			return err
		}
		s.logger.Warn("ledger unreachable; trying the write again", "run_id", s.run.ID, "error", err.Error(), "in_ms", delay.Milliseconds())
		if serr := sleep(ctx, delay); serr != nil {
			return err
		}
		delay = min(2*delay, time.Second)
	}
}
