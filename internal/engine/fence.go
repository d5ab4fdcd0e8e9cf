package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// leaseClock is this process's view of when its lease on a run runs out: the time it asked for
// at the last renewal that the ledger accepted.
type leaseClock struct {
	mu    sync.Mutex
	until time.Time
}

func (l *leaseClock) renewed(until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.until) {
		l.until = until
	}
}

func (l *leaseClock) expiry() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// fence is called by a step just before its side effect. The ledger refuses every write of a
// process that lost its lease, but it cannot refuse an HTTP request or a command: a process
// paused past its lease (SIGSTOP, a VM migration, a long GC pause) or cut off from the ledger
// would wake up and send the effect after another process took the run over. So while the lease
// is known to be fresh (renewed less than two thirds of its TTL ago, as the heartbeat keeps it)
// the effect goes ahead; otherwise the lease is renewed in the ledger first, which fails when
// another process holds the run now.
func (s *session) fence(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, domain.ErrLeaseLost) {
		return cause
	}
	ttl := s.e.leaseTTL()
	if time.Now().Before(s.lease.expiry().Add(-ttl / 3)) {
		return nil
	}
	until := time.Now().Add(ttl)
	err := s.e.Store.RenewLease(context.WithoutCancel(ctx), s.run.ID, s.owner, until)
	switch {
	case errors.Is(err, domain.ErrLeaseLost):
		err = fmt.Errorf("the lease ran out at %s without a renewal and another process holds the run now: %w",
			s.lease.expiry().UTC().Format(time.RFC3339Nano), err)
		s.leaseLost(err)
		return err
	case err != nil:
		return domain.Transient(fmt.Errorf("confirming the lease before the side effect: %w", err))
	}
	s.lease.renewed(until)
	return nil
}

// leaseLost stops the pass: another process owns the run, so nothing more may be done or
// written for it here. It says so once in the log.
func (s *session) leaseLost(err error) {
	s.lostOnce.Do(func() {
		s.logger.Warn("lease lost: another process holds the run now; this process stops without another side effect or write",
			"run_id", s.run.ID, "pipeline", s.run.Pipeline, "idempotency_key", s.run.IdempotencyKey, "error", err.Error())
		s.cancelLease(err)
	})
}
