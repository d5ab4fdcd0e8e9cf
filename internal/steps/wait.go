package steps

import (
	"context"

	"github.com/pipectl/pipectl/internal/domain"
)

// Wait pauses the run until `pipectl signal` delivers a payload that passes the step's schema;
// the step's timeout bounds the wait.
type Wait struct{}

var _ domain.StepExecutor = Wait{}

// Execute asks the engine to pause the run in waiting_external.
func (Wait) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	return domain.StepResult{Output: map[string]any{"waiting_for": call.Step.ID}, Outcome: domain.OutcomeWaiting}, nil
}
