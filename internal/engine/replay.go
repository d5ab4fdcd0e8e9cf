package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// ReplayOptions describe a replay run.
type ReplayOptions struct {
	// From names the step to re-execute from: the steps it does not lead to keep the recorded
	// outputs of the original run. Empty re-executes everything.
	From string
	// Enqueue only creates the replay run, queued for workers.
	Enqueue bool
}

// ReplayResult says what a replay did besides running.
type ReplayResult struct {
	*Result
	// Reused lists the steps whose outputs were taken from the original run.
	Reused []string
}

// Replay runs a pipeline again for a finished or paused run's stored input, as a new run
// linked to the original. Step keys stay the original's, so side effects that already happened
// are deduplicated by their targets (and skipped by guards).
func (e *Engine) Replay(ctx context.Context, p *domain.Pipeline, orig *domain.Run, input any, ro ReplayOptions, opts RunOptions) (*ReplayResult, error) {
	switch orig.State {
	case domain.StateQueued, domain.StateProcessing, domain.StateFailedTransient:
		return nil, fmt.Errorf("run %s is still live (%s); replay it once it has finished or paused: %w", orig.ID, orig.State, domain.ErrStateConflict)
	}
	if off, reason, err := e.Store.PipelineDisabled(ctx, p.Name); err != nil {
		return nil, err
	} else if off {
		return nil, fmt.Errorf("pipeline %s is disabled (%s): %w", p.Name, reason, ErrDisabled)
	}
	rerun := map[string]bool{}
	if ro.From != "" {
		if p.Step(ro.From) == nil {
			return nil, fmt.Errorf("--from %s: the pipeline has no such step", ro.From)
		}
		rerun = dependents(p, ro.From)
	}
	var origAttempts []domain.Attempt
	if ro.From != "" {
		var err error
		if origAttempts, err = e.Store.Attempts(ctx, orig.ID); err != nil {
			return nil, err
		}
		// Reused outputs were gated by the original run's spec: under another spec they
		// must pass its gates before any step of the replay sees them.
		if orig.SpecHash != Hash(p.Text) {
			if err := e.regate(p, orig, input, origAttempts, rerun); err != nil {
				return nil, fmt.Errorf("replay of run %s under spec sha256 %s: %w; replay from an earlier step (--from) so that it runs again", orig.ID, shortHash(Hash(p.Text)), err)
			}
		}
	}
	now := time.Now()
	base := orig.StepKeyBase
	if base == "" {
		base = orig.IdempotencyKey
	}
	id := NewRunID(now)
	run := &domain.Run{
		ID: id, Pipeline: p.Name, IdempotencyKey: orig.IdempotencyKey + "#replay-" + id, StepKeyBase: base,
		InputHash: orig.InputHash, Input: orig.Input, SpecText: string(p.Text), SpecHash: Hash(p.Text), SpecPath: p.Path,
		Version: e.Version, ReplayOf: orig.ID,
	}
	owner := e.Owner.String()
	claim := &domain.Claim{Owner: owner, LeaseUntil: now.Add(e.leaseTTL())}
	if ro.Enqueue {
		owner, claim = "", nil
	}
	got, _, err := e.Store.CreateRun(ctx, run, e.Actor, claim)
	if err != nil {
		return nil, err
	}
	res := &ReplayResult{Result: &Result{Run: got}}
	if ro.From != "" {
		reused := map[string]bool{}
		var copies []*domain.Attempt
		for _, a := range origAttempts {
			if rerun[a.StepID] || !domain.Completed(a.Outcome) || p.Step(a.StepID) == nil {
				continue
			}
			copyOf := &domain.Attempt{RunID: got.ID, StepID: a.StepID, ItemIndex: a.ItemIndex, Attempt: 1, StepKey: a.StepKey,
				StartedAt: time.Now(), FinishedAt: time.Now(), Outcome: domain.OutcomeReused, Output: a.Output,
				Error: fmt.Sprintf("output reused from run %s", orig.ID)}
			copies = append(copies, copyOf)
			if !reused[a.StepID] {
				reused[a.StepID] = true
				res.Reused = append(res.Reused, a.StepID)
			}
		}
		// The reused outputs are one commit: a replay that starts after a crash of this one
		// finds all of them or none.
		if len(copies) > 0 {
			if err := e.Store.CommitAttempts(ctx, owner, copies, nil, nil); err != nil {
				return res, err
			}
		}
	}
	if ro.Enqueue {
		return res, nil
	}
	final, err := e.execute(ctx, p, got.ID, nil, input, opts)
	if final != nil {
		res.Run = final
	}
	return res, err
}

// dependents returns a step and every step that depends on it, directly or not.
func dependents(p *domain.Pipeline, from string) map[string]bool {
	out := map[string]bool{from: true}
	for changed := true; changed; {
		changed = false
		for _, s := range p.Steps {
			if out[s.ID] {
				continue
			}
			for _, n := range s.Needs {
				if out[n] {
					out[s.ID] = true
					changed = true
					break
				}
			}
		}
	}
	return out
}
