package steps

import (
	"fmt"

	"github.com/pipectl/pipectl/internal/domain"
)

// renderText renders a template that must produce text; typed results become their text form.
func renderText(call *domain.StepCall, tpl string, field string) (string, error) {
	v, err := call.Render(tpl)
	if err != nil {
		return "", domain.Permanent(fmt.Errorf("%s: %w", field, err))
	}
	return textOf(v), nil
}

func renderTextMap(call *domain.StepCall, m map[string]string, field string) (map[string]string, error) {
	out := make(map[string]string, len(m))
	for k, tpl := range m {
		v, err := renderText(call, tpl, field+"."+k)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// minDerivedSecret is the shortest computed value redacted wherever it appears: shorter ones
// (a secret's length, its first letter) would blank out ordinary text everywhere.
const minDerivedSecret = 4

// renderSinkMap renders headers, query values or env. A value whose template names secrets is a
// secret itself, whatever it looks like (base64 of "user:"+secret, an upper-cased secret, a
// part of one): it is added to the run's redactor, and its key is listed in secret so that the
// recorded request shows it as *** in full.
func renderSinkMap(call *domain.StepCall, m map[string]string, field string) (values map[string]string, secret map[string]bool, err error) {
	values, err = renderTextMap(call, m, field)
	if err != nil {
		return nil, nil, err
	}
	secret = map[string]bool{}
	for k, tpl := range m {
		if domain.MentionsSecrets(tpl) || call.Redactor.Contains(values[k]) {
			secret[k] = true
			if len(values[k]) >= minDerivedSecret {
				call.Redactor.AddDerived(values[k])
			}
		}
	}
	return values, secret, nil
}

// shown is what the ledger records of a rendered map: the secret values as *** in full.
func shown(values map[string]string, secret map[string]bool) map[string]string {
	out := make(map[string]string, len(values))
	for k, v := range values {
		if secret[k] {
			v = domain.Redacted
		}
		out[k] = v
	}
	return out
}

// textOf is the text a value takes in a url, header, argument or env: the same rule the
// engine's run-time gate check applies.
func textOf(v any) string { return domain.SinkText(v) }
