package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
	"github.com/pipectl/pipectl/internal/ledger"
)

func (a *app) reviewCommand() *cobra.Command {
	var approve, reject, enqueue bool
	var note, hash string
	cmd := &cobra.Command{
		Use:   "review RUN --approve|--reject [--note TEXT] [--proposal-hash H] [--enqueue]",
		Short: "Decide on a run in needs_review: approve (and continue it) or reject (dead-letter it)",
		Long: "Approving accepts exactly the proposal the run holds (its sha256 is recorded; --proposal-hash\n" +
			"refuses when the held proposal is not the one you reviewed) and continues the run in this\n" +
			"process, or only queues it with --enqueue. Rejecting moves the run to failed_permanent.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if approve == reject {
				return usageErrorf("say --approve or --reject")
			}
			ctx := cmd.Context()
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			r, held, err := o.paused(ctx, args[0], domain.StateNeedsReview, domain.OutcomeNeedsReview)
			if err != nil {
				return err
			}
			var out map[string]any
			if len(held.Output) > 0 {
				v, _ := domain.DecodeJSON(held.Output)
				out, _ = v.(map[string]any)
			}
			heldHash, _ := out["proposal_hash"].(string)
			if hash != "" && hash != heldHash {
				return refused("run %s holds proposal %s, not %s", r.ID, shorten(heldHash, 16), hash)
			}
			actor := a.g.actorName()
			review := &ledger.Review{StepID: held.StepID, ItemIndex: held.ItemIndex, ProposalHash: heldHash, Actor: actor, Note: note}
			what := fmt.Sprintf("step %s", held.StepID)
			if heldHash != "" {
				what += ", proposal sha256 " + heldHash
			}
			if reject {
				review.Decision = "rejected"
				err := o.store.Decide(ctx, ledger.Decision{RunID: r.ID, Review: review, Change: domain.Change{
					To: domain.StateFailedPermanent, Actor: actor, Reason: withNote("rejected by "+actor+" ("+what+")", note),
					ErrorClass: domain.ClassPermanent, Error: withNote("rejected in review by "+actor, note), FailedStep: held.StepID}})
				if err != nil {
					return decisionError(r, err)
				}
				fmt.Fprintf(a.stdout, "run %s rejected by %s and dead-lettered\n", r.ID, actor)
				return &exitError{code: domain.ExitFailed}
			}
			review.Decision = "approved"
			var output any
			if p, ok := out["proposal"]; ok {
				output = p // a gate review: exactly the proposal that was shown
			} else {
				output = map[string]any{"decision": "approved", "by": actor, "note": note}
			}
			outJSON, _ := json.Marshal(output)
			record, _ := json.Marshal(map[string]any{"reviewed_by": actor, "note": note, "proposal_hash": heldHash})
			eng, err := o.engine(nil)
			if err != nil {
				return err
			}
			owner, until := o.heldLease(enqueue, eng)
			now := time.Now()
			att := &domain.Attempt{RunID: r.ID, StepID: held.StepID, ItemIndex: held.ItemIndex, Attempt: held.Attempt + 1, StepKey: held.StepKey,
				StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded, Output: outJSON, Request: record}
			err = o.store.Decide(ctx, ledger.Decision{RunID: r.ID, Attempt: att, Review: review, Change: domain.Change{
				To: domain.StateProcessing, Actor: actor, Reason: withNote("approved by "+actor+" ("+what+")", note), LeaseOwner: owner, LeaseUntil: until}})
			if err != nil {
				return decisionError(r, err)
			}
			fmt.Fprintf(a.stdout, "run %s approved by %s (%s)\n", r.ID, actor, what)
			if enqueue {
				fmt.Fprintf(a.stdout, "queued for workers\n")
				return nil
			}
			r, err = o.store.GetRun(ctx, r.ID)
			if err != nil {
				return err
			}
			return o.continueRun(ctx, r)
		},
	}
	cmd.Flags().BoolVar(&approve, "approve", false, "approve what the run holds and continue it")
	cmd.Flags().BoolVar(&reject, "reject", false, "reject it and dead-letter the run")
	cmd.Flags().StringVar(&note, "note", "", "comment recorded with the decision")
	cmd.Flags().StringVar(&hash, "proposal-hash", "", "refuse unless the held proposal has this sha256")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only queue the run for workers")
	return cmd
}

func withNote(s, note string) string {
	if note == "" {
		return s
	}
	return s + ": " + note
}

// decisionError explains a decision that lost a race: the run changed meanwhile.
func decisionError(r *domain.Run, err error) error {
	if errors.Is(err, domain.ErrStateConflict) {
		return refused("run %s changed while deciding (%v)", r.ID, err)
	}
	return err
}

// paused loads a run that must be paused in a state, and the attempt it waits on; any other
// state is a refusal that changes nothing.
func (o *operator) paused(ctx context.Context, id string, state domain.RunState, outcome string) (*domain.Run, *domain.Attempt, error) {
	r, err := o.run(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if r.State != state {
		return nil, nil, refused("run %s is %s, not %s", r.ID, r.State, state)
	}
	attempts, err := o.store.Attempts(ctx, r.ID)
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

func (a *app) signalCommand() *cobra.Command {
	var data string
	var enqueue bool
	cmd := &cobra.Command{
		Use:   "signal RUN STEP --data FILE|-|JSON [--enqueue]",
		Short: "Deliver the payload a wait step is waiting for, and continue the run",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return usageErrorf("--data is required: a JSON file, - for stdin, or inline JSON")
			}
			ctx := cmd.Context()
			payload, err := readInput(data, a.stdin)
			if err != nil {
				return &exitError{code: domain.ExitUsage, err: err}
			}
			o, err := a.operator(ctx)
			if err != nil {
				return err
			}
			defer o.Close()
			r, held, err := o.paused(ctx, args[0], domain.StateWaitingExternal, domain.OutcomeWaiting)
			if err != nil {
				return err
			}
			if held.StepID != args[1] {
				return refused("run %s waits on step %s, not %s", r.ID, held.StepID, args[1])
			}
			p, err := o.spec(r)
			if err != nil {
				return err
			}
			step := p.Step(held.StepID)
			if step == nil || step.Wait == nil || step.Wait.Schema == nil {
				return fmt.Errorf("run %s: step %s is not a wait step in the stored spec", r.ID, held.StepID)
			}
			sch, err := gate.CompileSchema(step.Wait.Schema.Location, step.Wait.Schema.Doc)
			if err != nil {
				return err
			}
			if reasons := gate.Violations(sch.Validate(payload)); len(reasons) > 0 {
				parts := make([]string, len(reasons))
				for i, rs := range reasons {
					parts[i] = rs.String()
				}
				return refused("the payload does not match step %s's schema (%s); run %s keeps waiting", held.StepID, strings.Join(parts, "; "), r.ID)
			}
			payload = gate.Coerce(step.Wait.Schema.Doc, payload)
			outJSON, _ := json.Marshal(payload)
			actor := a.g.actorName()
			eng, err := o.engine(nil)
			if err != nil {
				return err
			}
			owner, until := o.heldLease(enqueue, eng)
			now := time.Now()
			att := &domain.Attempt{RunID: r.ID, StepID: held.StepID, ItemIndex: held.ItemIndex, Attempt: held.Attempt + 1, StepKey: held.StepKey,
				StartedAt: now, FinishedAt: now, Outcome: domain.OutcomeSucceeded, Output: outJSON, Request: []byte(fmt.Sprintf(`{"signalled_by": %q}`, actor))}
			err = o.store.Decide(ctx, ledger.Decision{RunID: r.ID, Attempt: att, Change: domain.Change{
				To: domain.StateProcessing, Actor: actor, Reason: "signal for step " + held.StepID + " from " + actor, LeaseOwner: owner, LeaseUntil: until}})
			if err != nil {
				return decisionError(r, err)
			}
			fmt.Fprintf(a.stdout, "run %s: step %s signalled by %s\n", r.ID, held.StepID, actor)
			if enqueue {
				return nil
			}
			r, err = o.store.GetRun(ctx, r.ID)
			if err != nil {
				return err
			}
			return o.continueRun(ctx, r)
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the payload: a JSON file, - for stdin, or inline JSON")
	cmd.Flags().BoolVar(&enqueue, "enqueue", false, "only queue the run for workers")
	return cmd
}
