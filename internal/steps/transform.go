// Package steps implements the step types: one executor per file, each independent of the engine and the ledger.
package steps

import (
	"context"

	"github.com/pipectl/pipectl/internal/domain"
)

// Transform builds its output from templates; it has no side effect.
type Transform struct{}

var _ domain.StepExecutor = Transform{}

// Execute renders the step's output value.
func (Transform) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	out, err := call.Render(call.Step.Transform.Output)
	if err != nil {
		return domain.StepResult{}, domain.Permanent(err)
	}
	return domain.StepResult{Output: out, Outcome: domain.OutcomeSucceeded}, nil
}
