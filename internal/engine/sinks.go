package engine

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pipectl/pipectl/internal/domain"
)

// checkSinks is the run-time half of the gate invariant: right before a step acts, every
// untrusted value that reaches one of its side-effect positions is checked again, against
// the schemas of the spec this run executes and against the position itself. The validator
// proved the same; this check keeps a bug in that proof, or a value gated under another spec,
// from becoming a side effect. A violation is a permanent failure before anything is sent.
func (e *Engine) checkSinks(p *domain.Pipeline, step *domain.Step, vars map[string]any) error {
	for _, chk := range p.Sinks[step.ID] {
		if err := e.checkSink(chk, vars); err != nil {
			return domain.Permanent(fmt.Errorf("%s: refused before the step ran (run-time gate check): %w", chk.Field, err))
		}
	}
	return nil
}

func (e *Engine) checkSink(chk domain.SinkCheck, vars map[string]any) error {
	class := chk.Class
	if len(chk.Before) > 0 {
		var prefix strings.Builder
		for _, piece := range chk.Before {
			if piece.Expr == "" {
				prefix.WriteString(piece.Text)
				continue
			}
			v, err := e.Renderer.Render("${{ "+piece.Expr+" }}", vars)
			if err != nil {
				return err
			}
			prefix.WriteString(domain.SinkText(v))
		}
		class = domain.Stricter(class, domain.URLPosition(prefix.String()))
	}
	var rendered *string
	for _, fl := range chk.Flows {
		class := class
		if fl.Class != "" {
			class = domain.Stricter(class, fl.Class)
		}
		finite := fl.Constraint.Finite()
		if class == domain.SinkCode || (class == domain.SinkFixed && !finite) {
			return fmt.Errorf("%s %s may not choose %s", fl.Source, fl.Origin, describeClass(class))
		}
		for _, v := range fl.Origin.Lookup(vars) {
			if err := fl.Constraint.Admits(v); err != nil {
				return fmt.Errorf("%s %s = %s %v under this run's spec", fl.Source, fl.Origin, excerpt(v, vars), err)
			}
			if !finite && !fl.Transformed && !fl.Constraint.Lists(v) {
				if err := class.CheckValue(v); err != nil {
					return fmt.Errorf("%s %s = %s %v", fl.Source, fl.Origin, excerpt(v, vars), err)
				}
			}
		}
		if !finite && fl.Transformed {
			if rendered == nil {
				v, err := e.Renderer.Render("${{ "+chk.Expr+" }}", vars)
				if err != nil {
					return err
				}
				text := domain.SinkText(v)
				rendered = &text
			}
			if err := class.CheckText(*rendered); err != nil {
				return fmt.Errorf("the value computed from %s %s, %s, %v", fl.Source, fl.Origin, excerpt(*rendered, vars), err)
			}
		}
	}
	return nil
}

func describeClass(c domain.SinkClass) string {
	if c == domain.SinkCode {
		return "code an interpreter runs"
	}
	return "the program, script or host"
}

// excerpt shows a value in an error: quoted (so control characters are visible) and short. A
// value computed with a secret is redacted before it is cut: a cut secret would no longer be
// recognised by the redaction of the error text.
func excerpt(v any, vars map[string]any) string {
	var values []string
	if secrets, ok := vars["secrets"].(map[string]any); ok {
		for _, x := range secrets {
			if str, ok := x.(string); ok {
				values = append(values, str)
			}
		}
	}
	return strconv.Quote(domain.NewRedactor(values).Head(domain.SinkText(v), 60))
}
