package domain

import (
	"errors"
	"fmt"
	"time"
)

// ErrorClass steers what the engine does after a failed attempt.
type ErrorClass string

// The error classes of SPEC section 3.
const (
	// ClassTransient: worth retrying with backoff (network, timeouts, 429, 5xx).
	ClassTransient ErrorClass = "transient"
	// ClassPermanent: retrying cannot help (4xx, schema failures, non-zero exits).
	ClassPermanent ErrorClass = "permanent"
	// ClassUnknown: unclassified; one short retry, then dead-letter.
	ClassUnknown ErrorClass = "unknown"
)

// ClassifiedError carries an error class and an optional server-requested delay.
type ClassifiedError struct {
	Class      ErrorClass
	RetryAfter time.Duration
	Err        error
}

func (e *ClassifiedError) Error() string { return e.Err.Error() }
func (e *ClassifiedError) Unwrap() error { return e.Err }

// Transient wraps err as transient.
func Transient(err error) error { return &ClassifiedError{Class: ClassTransient, Err: err} }

// Permanent wraps err as permanent.
func Permanent(err error) error { return &ClassifiedError{Class: ClassPermanent, Err: err} }

// Permanentf formats a permanent error.
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// ClassOf returns the class an error carries, or ClassUnknown.
func ClassOf(err error) ErrorClass {
	var ce *ClassifiedError
	if errors.As(err, &ce) {
		return ce.Class
	}
	return ClassUnknown
}

// RetryAfterOf returns the delay a server asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var ce *ClassifiedError
	if errors.As(err, &ce) {
		return ce.RetryAfter
	}
	return 0
}

// Exit codes of the command line (SPEC section 4).
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitUsage   = 2
	ExitPaused  = 3
	ExitRefused = 4
)

// Ledger errors that callers branch on.
var (
	// ErrNotFound: no such run.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a run id prefix matches more than one run.
	ErrAmbiguous = errors.New("ambiguous")
	// ErrStateConflict: the run was not in a state from which the change is legal, or another
	// process changed it first.
	ErrStateConflict = errors.New("state conflict")
	// ErrLeaseLost: another process owns the run now.
	ErrLeaseLost = errors.New("lease lost")
	// ErrLedgerUnavailable: the database could not be reached or dropped the connection
	// (a restart, a failover, a cut connection) before the write was committed, so nothing of
	// it was written and it may be tried again.
	ErrLedgerUnavailable = errors.New("ledger unavailable")
)
