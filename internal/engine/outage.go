package engine

import (
	"context"
	"errors"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// retrying runs a ledger write again while it fails because the database cannot be reached
// (a restart or failover of PostgreSQL, a dropped connection): the ledger says so only when
// nothing of the write was committed, so trying again cannot apply it twice. Without this, one
// failed commit during a restart of a second made the worker drop the run, which then waited
// for its lease to expire (found by TestFaultPostgresRestart). It gives up after one lease
// TTL, or when ctx ends (the process stops, or the lease was lost); the run is then handed to
// the next owner as before.
func (s *session) retrying(ctx context.Context, write func() error) error {
	deadline := time.Now().Add(s.e.leaseTTL())
	delay := 20 * time.Millisecond
	for {
		err := write()
		if err == nil || !errors.Is(err, domain.ErrLedgerUnavailable) || time.Now().After(deadline) {
			return err
		}
		if serr := sleep(ctx, delay); serr != nil {
			return err
		}
		delay = min(2*delay, time.Second)
	}
}
