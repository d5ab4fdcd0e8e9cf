package steps

import (
	"fmt"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// Regate checks a recorded output of an llm, gate or wait step against the gate the step has
// now: the run continues, or is replayed, under a spec other than the one that gated it. An
// output a person approved still passes rules that send a value to review, since the person
// was that review; it must pass the schema and every rejecting rule.
func (g *Gates) Regate(step *domain.Step, output any, vars map[string]any, approved bool) error {
	var schema *domain.Schema
	var rules []domain.Rule
	switch step.Type {
	case domain.StepLLM:
		schema, rules = step.LLM.OutputSchema, step.LLM.Rules
	case domain.StepGate:
		schema, rules = step.Gate.Schema, step.Gate.Rules
	case domain.StepWait:
		schema = step.Wait.Schema
	default:
		return nil
	}
	compiled, err := g.For(step, schema, rules)
	if err != nil {
		return err
	}
	verdict := compiled.Check(output, map[string]any{"inputs": vars["inputs"], "steps": vars["steps"], "run": vars["run"]})
	if verdict.Passed() || (approved && verdict.Decision == gate.Review) {
		return nil
	}
	return fmt.Errorf("%s", verdict.Summary())
}
