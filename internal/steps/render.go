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

func textOf(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	}
	b, err := jsonMarshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
