package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// wouldContinue reports whether a second submission would execute the existing run (rather
// than report it): queued, waiting for a retry, or processing under an owner that is gone.
func (e *Engine) wouldContinue(r *domain.Run) bool {
	switch r.State {
	case domain.StateQueued, domain.StateFailedTransient:
		return true
	case domain.StateProcessing:
		prev, _ := ParseOwner(r.LeaseOwner)
		return prev.Gone(e.Owner) || (!r.LeaseExpires.IsZero() && time.Now().After(r.LeaseExpires))
	}
	return false
}

// rebindSpec decides what happens when a run is continued with a spec other than the one it
// was created from: refused unless asked for, and then only once every recorded output passes
// the new spec's gates; the run is then bound to the new spec, and the ledger says so.
func (e *Engine) rebindSpec(ctx context.Context, p *domain.Pipeline, r *domain.Run, input any, opts RunOptions) error {
	newHash := Hash(p.Text)
	if !opts.AcceptSpecChange {
		return fmt.Errorf("run %s was created from spec sha256 %s, and %s is now sha256 %s: continuing would run the edited spec on outputs that the old one gated. "+
			"Run the original spec again to finish the run, or replay it under the new spec (pipectl replay %s --spec %s), "+
			"or continue it under the new spec with --accept-spec-change, which first gates every recorded output again: %w",
			r.ID, shortHash(r.SpecHash), p.Path, shortHash(newHash), r.ID, p.Path, ErrSpecChanged)
	}
	attempts, err := e.Store.Attempts(ctx, r.ID)
	if err != nil {
		return err
	}
	if err := e.regate(p, r, input, attempts, nil); err != nil {
		return fmt.Errorf("run %s cannot continue under spec sha256 %s: %w", r.ID, shortHash(newHash), err)
	}
	bound := domain.Run{SpecText: string(p.Text), SpecHash: newHash, SpecPath: p.Path}
	reason := fmt.Sprintf("spec changed from sha256 %s to %s (%s); every recorded output passed the new spec's gates", shortHash(r.SpecHash), shortHash(newHash), p.Path)
	if err := e.Store.RebindSpec(ctx, r.ID, r.SpecHash, bound, reason, e.Actor); err != nil {
		return err
	}
	e.Log.Info("run rebound to an edited spec", "run_id", r.ID, "pipeline", r.Pipeline, "from_spec", shortHash(r.SpecHash), "to_spec", shortHash(newHash))
	r.SpecText, r.SpecHash, r.SpecPath = bound.SpecText, bound.SpecHash, bound.SpecPath
	return nil
}

// regate checks the recorded outputs of the gated steps (llm, gate, wait) against the gates
// they have in p, before any of them is visible to a step of p. skip lists steps whose
// outputs will not be used (a replay re-executes them).
func (e *Engine) regate(p *domain.Pipeline, r *domain.Run, input any, attempts []domain.Attempt, skip map[string]bool) error {
	pr, err := loadProgress(p, attempts, time.Time{})
	if err != nil {
		return err
	}
	approved := map[string]bool{}
	for _, a := range attempts {
		if a.Outcome == domain.OutcomeNeedsReview {
			approved[a.StepID] = true
		}
	}
	steps := make(map[string]any, len(pr.outputs))
	for id, out := range pr.outputs {
		steps[id] = map[string]any{"output": out}
	}
	vars := map[string]any{"inputs": input, "steps": steps,
		"run": map[string]any{"id": r.ID, "idempotency_key": r.IdempotencyKey, "pipeline": r.Pipeline}}
	var errs []error
	for _, step := range p.Steps {
		if skip[step.ID] {
			continue
		}
		switch step.Type {
		case domain.StepLLM, domain.StepGate, domain.StepWait:
		default:
			continue
		}
		var outputs []any
		if step.ForEach != "" {
			for _, out := range pr.itemOutputs[step.ID] {
				outputs = append(outputs, out)
			}
		} else if pr.done[step.ID] && pr.outputs[step.ID] != nil {
			outputs = append(outputs, pr.outputs[step.ID])
		}
		if len(outputs) == 0 {
			continue
		}
		if e.Regater == nil {
			return errors.New("this process cannot gate recorded outputs again")
		}
		for _, out := range outputs {
			if err := e.Regater.Regate(step, out, vars, approved[step.ID]); err != nil {
				errs = append(errs, fmt.Errorf("the recorded output of step %s does not pass its gate in the new spec: %w", step.ID, err))
				break
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errors.Join(errs...), ErrSpecChanged)
	}
	return nil
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
