package dsl

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
)

// ValidateInput checks a run input against the pipeline's inputs schema. The error lists every
// violation with its JSON pointer.
func ValidateInput(p *domain.Pipeline, input any) error {
	if p.Inputs == nil {
		return nil
	}
	sch, err := CompileSchema(p.Inputs.Location, p.Inputs.Doc)
	if err != nil {
		return fmt.Errorf("inputs schema: %w", err)
	}
	return SchemaViolations(sch.Validate(input))
}

// SchemaViolations renders a validation error as one line per violation, sorted by location.
func SchemaViolations(err error) error {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var lines []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := e.InstanceLocation
			if loc == "" {
				loc = "/"
			}
			lines = append(lines, loc+": "+e.Message)
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "; "))
}
