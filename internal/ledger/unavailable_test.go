package ledger

import (
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pipectl/pipectl/internal/domain"
)

// notSent is an error of a connection that was closed before anything was sent (pgconn's
// "conn closed" says so with SafeToRetry).
type notSent struct{}

func (notSent) Error() string     { return "conn closed" }
func (notSent) SafeToRetry() bool { return true }

// TestRetryable: a write may be tried again only when the server was out of reach and the
// driver says the transaction was not committed (the fault suite's restarts and cut connections).
func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"cut before COMMIT", io.ErrUnexpectedEOF, true},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, true},
		{"COMMIT never sent", &commitError{notSent{}}, true},
		{"cut while COMMIT was on its way", &commitError{io.ErrUnexpectedEOF}, false},
		{"a refusal", &pgconn.PgError{Code: "23505"}, false},
		{"the lease", domain.ErrLeaseLost, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := retryable(tc.err)
			if got := errors.Is(err, domain.ErrLedgerUnavailable); got != tc.want {
				t.Fatalf("retryable(%v) = %v, marked %v; want %v", tc.err, err, got, tc.want)
			}
			if isCommitError(err) {
				t.Fatalf("the commit marker leaked: %v", err)
			}
		})
	}
}
