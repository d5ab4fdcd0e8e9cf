package steps

import (
	"context"
	"fmt"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// Gate validates untrusted data (a webhook payload, an external system's answer) before any
// later step may use it.
type Gate struct {
	Gates *Gates
}

var _ domain.StepExecutor = Gate{}

// Execute renders the input and checks it against the schema and rules.
func (g Gate) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	spec := call.Step.Gate
	compiled, err := g.Gates.For(call.Step, spec.Schema, spec.Rules)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(err)
	}
	value, err := call.Render(spec.Input)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(fmt.Errorf("input: %w", err))
	}
	if spec.Schema != nil {
		value = gate.Coerce(spec.Schema.Doc, value)
	}
	verdict := compiled.Check(value, ruleVars(call))
	switch verdict.Decision {
	case gate.Pass:
		return domain.StepResult{Output: value, Outcome: domain.OutcomeSucceeded, Response: verdict}, nil
	case gate.Review:
		out, err := reviewOutput(value, verdict)
		if err != nil {
			return domain.StepResult{}, domain.Permanent(err)
		}
		return domain.StepResult{Output: out, Outcome: domain.OutcomeNeedsReview, Response: verdict, Review: verdict.Summary()}, nil
	}
	return domain.StepResult{Response: verdict}, domain.Permanent(fmt.Errorf("gate rejected the input: %s", verdict.Summary()))
}
