package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Pure reports whether every step of p is pure (transform, gate): a run of it changes nothing
// outside the ledger, so it can run to its end inside the claim that took it (Finish).
func Pure(p *domain.Pipeline) bool {
	for _, step := range p.Steps {
		if !pureStep(step) {
			return false
		}
	}
	return len(p.Steps) > 0
}

// errNotHeld stops a held run that asked for a write only a leased run may make (an intent,
// a second transition): the claim then takes it as any other run.
var errNotHeld = errors.New("this write needs the run's own lease")

// Finish executes a run that a claim has locked and not yet committed, to its end or pause, and
// returns what the claim is to write in its place: its attempts and its transition. Only a
// fresh run (no attempt yet, not a dry run) of a pipeline of pure steps qualifies. Nothing is
// written here: should the claim fail to commit, or its process die before, the run is still
// queued and nothing of it happened anywhere (its steps are recomputed by the next claim).
//
// It returns nil when the run does not qualify, or stops short of a transition (the kill
// switch, ctx ending, a write it may not make held): the claim then takes it the usual way,
// to processing, and nothing done here counts. The logs and observer calls of the run wait
// for Finished.Committed.
func (e *Engine) Finish(ctx context.Context, p *domain.Pipeline, run *domain.Run, input any, opts RunOptions) *domain.Finished {
	if !run.Unstarted || run.DryRun || !Pure(p) {
		return nil
	}
	claimedAt := time.Now()
	held := *run
	held.State, held.LeaseOwner, held.LeaseExpires = domain.StateProcessing, e.Owner.String(), claimedAt.Add(e.leaseTTL())
	redact, secrets := e.secretsOf(opts)
	s := e.newSession(p, &held, input, opts, redact, secrets, emptyProgress())
	s.held = &heldStore{Store: e.Store}
	s.store = s.held
	// The claim that locked the run skipped disabled pipelines a moment ago.
	s.checkedKill = claimedAt
	if err := s.pass(ctx); err != nil || s.held.change == nil {
		return nil
	}
	later := s.held.later
	return &domain.Finished{
		Run: s.run, Attempts: s.held.attempts, Change: *s.held.change,
		Committed: func() {
			for _, f := range later {
				f()
			}
		},
	}
}

// heldStore takes the writes of a run held by its claim (Finish) in place of the ledger. Reads
// (the kill switch) go to the ledger.
type heldStore struct {
	Store
	attempts []*domain.Attempt
	change   *domain.Change
	// later holds what is told of the run once its claim committed (session.tell); units
	// running at once add to it (mu).
	mu    sync.Mutex
	later []func()
}

func (h *heldStore) CommitAttempts(_ context.Context, _ string, done []*domain.Attempt, start *domain.Attempt, ch *domain.Change) error {
	if start != nil {
		return errNotHeld
	}
	if ch != nil {
		if err := h.transition(*ch); err != nil {
			return err
		}
	}
	h.attempts = append(h.attempts, done...)
	return nil
}

func (h *heldStore) FinishAttempt(ctx context.Context, owner string, a *domain.Attempt, ch *domain.Change) error {
	return h.CommitAttempts(ctx, owner, []*domain.Attempt{a}, nil, ch)
}

func (h *heldStore) StartAttempt(context.Context, string, *domain.Attempt) error { return errNotHeld }

func (h *heldStore) Transition(_ context.Context, _ string, ch domain.Change) error {
	return h.transition(ch)
}

// transition keeps the one transition a held run makes: out of processing.
func (h *heldStore) transition(ch domain.Change) error {
	if h.change != nil || ch.To == domain.StateProcessing || !domain.CanTransition(domain.StateProcessing, ch.To) {
		return errNotHeld
	}
	h.change = &ch
	return nil
}

// A held run's lease is its claim's row lock: there is nothing to renew or give back.
func (h *heldStore) RenewLease(context.Context, string, string, time.Time) error { return nil }
func (h *heldStore) ReleaseLease(context.Context, string, string) error          { return nil }
