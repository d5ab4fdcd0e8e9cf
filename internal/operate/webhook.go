package operate

import (
	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
)

// WebhookInput turns a verified delivery's parsed body into the run input: the body itself,
// or what the pipeline's triggers.webhook.input makes of it. The result is an input like any
// other: Submit checks it against the inputs schema, and the taint rule treats it as untrusted.
func (o *Ops) WebhookInput(p *domain.Pipeline, body any) (any, error) {
	hook := p.Triggers.Webhook
	if hook == nil || hook.Input == nil {
		return body, nil
	}
	v, err := o.validator()
	if err != nil {
		return nil, err
	}
	in, err := dsl.NewEvaluator(v.Expressions()).Render(hook.Input, map[string]any{dsl.VarBody: body})
	if err != nil {
		return nil, errorf(KindInputSchema, "triggers.webhook.input: %v", err)
	}
	return in, nil
}
