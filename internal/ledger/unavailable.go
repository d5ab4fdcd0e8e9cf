package ledger

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pipectl/pipectl/internal/domain"
)

// retryable returns the error of a transaction (from txOnce), marked with
// domain.ErrLedgerUnavailable when the server could not be reached and the driver says the
// transaction was not committed, so that the write may be tried again: the connection failed
// before COMMIT, or COMMIT itself was not sent (pgconn.SafeToRetry). An error while COMMIT was on
// its way is left alone: nobody can tell whether it was applied. Every write is conditional
// (the run's state and lease, an attempt still running, unique attempt numbers), so a retry of
// a write that was applied after all is refused rather than applied twice.
func retryable(err error) error {
	if err == nil {
		return nil
	}
	if unreachable(err) && (!isCommitError(err) || pgconn.SafeToRetry(err)) {
		return fmt.Errorf("%w: %w", domain.ErrLedgerUnavailable, unwrapCommit(err))
	}
	return unwrapCommit(err)
}

// Unreachable reports whether an error of the ledger (Open's included) says that the database
// could not be reached or dropped the connection, so that trying again later may succeed.
func Unreachable(err error) bool {
	return errors.Is(err, domain.ErrLedgerUnavailable) || unreachable(err)
}

// unreachable reports whether err says the database server could not be reached or dropped
// the connection, rather than refusing the statement: a restart (the server's own shutdown and
// start-up errors included), a failover, a cut connection.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exceptions; 57P01-57P03: the server shuts down, crashed, or
		// is starting up.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || pgconn.SafeToRetry(err) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &netErr)
}
