package steps

import (
	"context"

	"github.com/pipectl/pipectl/internal/domain"
)

// Approval pauses the run for a person: the run goes to needs_review with the rendered
// message, and `pipectl review` decides.
type Approval struct{}

var _ domain.StepExecutor = Approval{}

// Execute renders the message and asks for review.
func (Approval) Execute(ctx context.Context, call *domain.StepCall) (domain.StepResult, error) {
	msg, err := renderText(call, call.Step.Approval.Message, "message")
	if err != nil {
		return domain.StepResult{}, err
	}
	if msg == "" {
		msg = "approve step " + call.Step.ID
	}
	return domain.StepResult{Output: map[string]any{"message": msg}, Outcome: domain.OutcomeNeedsReview, Review: msg}, nil
}
