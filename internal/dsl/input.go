package dsl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// ValidateInput checks a run input against the pipeline's inputs schema. The error lists every
// violation with its JSON pointer.
func ValidateInput(p *domain.Pipeline, input any) error {
	if p.Inputs == nil {
		return nil
	}
	sch, err := gate.CompileSchema(p.Inputs.Location, p.Inputs.Doc)
	if err != nil {
		return fmt.Errorf("inputs schema: %w", err)
	}
	reasons := gate.Violations(sch.Validate(input))
	if len(reasons) == 0 {
		return nil
	}
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = r.String()
	}
	return errors.New(strings.Join(parts, "; "))
}
