package operate

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
)

// ReviewRequest is a decision on a run in needs_review.
type ReviewRequest struct {
	RunID   string
	Approve bool
	// ProposalHash, when set, refuses unless the held proposal has this sha256: the reviewer
	// approves exactly what they saw.
	ProposalHash string
	// RequireHash refuses an approval that names no proposal hash when the run holds a
	// proposal: the API binds every approval to what the reviewer was shown.
	RequireHash bool
	Note        string
	// Enqueue hands an approved run to workers instead of leaving its lease to the caller,
	// who then continues it (Continue).
	Enqueue bool
}

// Decided is what a review or a signal did.
type Decided struct {
	// Run is the run after the decision.
	Run *domain.Run
	// Step is the step that was decided on; ProposalHash the sha256 of the proposal it held.
	Step         string
	ProposalHash string
	// What describes the decision in the words of the run's events.
	What string
}

// Review approves or rejects what a run in needs_review holds. An approval completes the
// paused step with exactly the held proposal and moves the run to processing; a rejection
// dead-letters it. Either is one commit, refused if the run changed meanwhile.
func (o *Ops) Review(ctx context.Context, actor string, req ReviewRequest) (*Decided, error) {
	if err := o.ExpireWaits(ctx); err != nil {
		return nil, err
	}
	r, held, err := o.paused(ctx, req.RunID, domain.StateNeedsReview, domain.OutcomeNeedsReview)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if len(held.Output) > 0 {
		v, _ := domain.DecodeJSON(held.Output)
		out, _ = v.(map[string]any)
	}
	heldHash, _ := out["proposal_hash"].(string)
	if req.Approve && req.RequireHash && req.ProposalHash == "" && heldHash != "" {
		return nil, errorf(KindInvalid, "approving run %s needs proposal_hash: the sha256 of the proposal you reviewed (%s holds %s); nothing was changed", r.ID, held.StepID, shorten(heldHash, 16))
	}
	if req.ProposalHash != "" && req.ProposalHash != heldHash {
		return nil, refused("run %s holds proposal %s, not %s", r.ID, shorten(heldHash, 16), req.ProposalHash)
	}
	if req.Approve && o.ForbidSelfApproval {
		events, err := o.Store.Events(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if len(events) > 0 && events[0].Actor == actor {
			return nil, errorf(KindForbidden, "%s submitted run %s and may not approve it; another reviewer must; nothing was changed", actor, r.ID)
		}
	}
	review := &ledger.Review{StepID: held.StepID, ItemIndex: held.ItemIndex, ProposalHash: heldHash, Actor: actor, Note: req.Note}
	what := fmt.Sprintf("step %s", held.StepID)
	if heldHash != "" {
		what += ", proposal sha256 " + heldHash
	}
	d := &Decided{Step: held.StepID, ProposalHash: heldHash, What: what}
	if !req.Approve {
		review.Decision = "rejected"
		err := o.Store.Decide(ctx, ledger.Decision{RunID: r.ID, Review: review, Change: domain.Change{
			To: domain.StateFailedPermanent, Actor: actor, Reason: withNote("rejected by "+actor+" ("+what+")", req.Note),
			ErrorClass: domain.ClassPermanent, Error: withNote("rejected in review by "+actor, req.Note), FailedStep: held.StepID}})
		if err != nil {
			return nil, decisionError(r, err)
		}
		d.Run, err = o.Store.GetRun(ctx, r.ID)
		return d, err
	}
	review.Decision = "approved"
	var output any
	if p, ok := out["proposal"]; ok {
		output = p // a gate review: exactly the proposal that was shown
	} else {
		output = map[string]any{"decision": "approved", "by": actor, "note": req.Note}
	}
	// Typed, so that numbers read back as the gate passed them (635.0 stays a float).
	outJSON, err := domain.MarshalJSON(output)
	if err != nil {
		return nil, err
	}
	record, _ := json.Marshal(map[string]any{"reviewed_by": actor, "note": req.Note, "proposal_hash": heldHash})
	owner, until, err := o.lease(actor, req.Enqueue)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	att := &domain.Attempt{RunID: r.ID, StepID: held.StepID, ItemIndex: held.ItemIndex, Attempt: held.Attempt + 1, StepKey: held.StepKey,
		StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded, Output: outJSON, Request: record}
	err = o.Store.Decide(ctx, ledger.Decision{RunID: r.ID, Attempt: att, Review: review, Change: domain.Change{
		To: domain.StateProcessing, Actor: actor, Reason: withNote("approved by "+actor+" ("+what+")", req.Note), LeaseOwner: owner, LeaseUntil: until}})
	if err != nil {
		return nil, decisionError(r, err)
	}
	d.Run, err = o.Store.GetRun(ctx, r.ID)
	return d, err
}

// SignalRequest delivers the payload a wait step is waiting for.
type SignalRequest struct {
	RunID   string
	Step    string
	Payload any
	// Enqueue: as in ReviewRequest.
	Enqueue bool
}

// Signal completes a run's wait step with a payload that matches the step's schema and moves
// the run to processing.
func (o *Ops) Signal(ctx context.Context, actor string, req SignalRequest) (*Decided, error) {
	if err := o.ExpireWaits(ctx); err != nil {
		return nil, err
	}
	r, held, err := o.paused(ctx, req.RunID, domain.StateWaitingExternal, domain.OutcomeWaiting)
	if err != nil {
		return nil, err
	}
	if held.StepID != req.Step {
		return nil, refused("run %s waits on step %s, not %s", r.ID, held.StepID, req.Step)
	}
	p, err := o.Spec(r)
	if err != nil {
		return nil, err
	}
	step := p.Step(held.StepID)
	if step == nil || step.Wait == nil || step.Wait.Schema == nil {
		return nil, fmt.Errorf("run %s: step %s is not a wait step in the stored spec", r.ID, held.StepID)
	}
	sch, err := gate.CompileSchema(step.Wait.Schema.Location, step.Wait.Schema.Doc)
	if err != nil {
		return nil, err
	}
	payload := req.Payload
	if reasons := gate.Violations(sch.Validate(payload)); len(reasons) > 0 {
		parts := make([]string, len(reasons))
		for i, rs := range reasons {
			parts[i] = rs.String()
		}
		return nil, refused("the payload does not match step %s's schema (%s); run %s keeps waiting", held.StepID, strings.Join(parts, "; "), r.ID)
	}
	payload = gate.Coerce(step.Wait.Schema.Doc, payload)
	outJSON, err := domain.MarshalJSON(payload)
	if err != nil {
		return nil, err
	}
	owner, until, err := o.lease(actor, req.Enqueue)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	signalled, _ := json.Marshal(map[string]string{"signalled_by": actor})
	att := &domain.Attempt{RunID: r.ID, StepID: held.StepID, ItemIndex: held.ItemIndex, Attempt: held.Attempt + 1, StepKey: held.StepKey,
		StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded, Output: outJSON, Request: signalled}
	err = o.Store.Decide(ctx, ledger.Decision{RunID: r.ID, Attempt: att, Change: domain.Change{
		To: domain.StateProcessing, Actor: actor, Reason: "signal for step " + held.StepID + " from " + actor, LeaseOwner: owner, LeaseUntil: until}})
	if err != nil {
		return nil, decisionError(r, err)
	}
	run, err := o.Store.GetRun(ctx, r.ID)
	return &Decided{Run: run, Step: held.StepID, What: "step " + held.StepID}, err
}

// lease returns the lease a decision puts on the run: this process's, for a caller that
// continues the run itself, or an expired one that any worker takes over.
func (o *Ops) lease(actor string, enqueue bool) (string, time.Time, error) {
	if enqueue {
		return "", domain.LeaseHandedBack, nil
	}
	eng, err := o.Engine(actor, nil)
	if err != nil {
		return "", time.Time{}, err
	}
	return eng.Owner.String(), time.Now().Add(eng.LeaseTTL), nil
}

// paused loads a run that must be paused in a state, and the attempt it waits on; any other
// state is a refusal that changes nothing.
func (o *Ops) paused(ctx context.Context, id string, state domain.RunState, outcome string) (*domain.Run, *domain.Attempt, error) {
	r, err := o.Run(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if r.State != state {
		return nil, nil, refused("run %s is %s, not %s", r.ID, r.State, state)
	}
	attempts, err := o.Store.Attempts(ctx, r.ID)
	if err != nil {
		return nil, nil, err
	}
	for i := len(attempts) - 1; i >= 0; i-- {
		if attempts[i].Outcome == outcome {
			return r, &attempts[i], nil
		}
	}
	return nil, nil, fmt.Errorf("run %s is %s but holds no %s attempt", r.ID, r.State, outcome)
}

func withNote(s, note string) string {
	if note == "" {
		return s
	}
	return s + ": " + note
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
