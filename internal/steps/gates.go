package steps

import (
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/gate"
)

// Gates compiles and caches the gate (schema plus rules) of each step: a pipeline is parsed
// once per process, so the step pointer is a stable key. Safe for concurrent use.
type Gates struct {
	once  sync.Once
	env   *cel.Env
	err   error
	cache sync.Map // *domain.Step -> *gate.Gate
}

// For returns the compiled gate for a step's schema and rules.
func (g *Gates) For(step *domain.Step, schema *domain.Schema, rules []domain.Rule) (*gate.Gate, error) {
	if v, ok := g.cache.Load(step); ok {
		return v.(*gate.Gate), nil
	}
	g.once.Do(func() { g.env, g.err = gate.Env() })
	if g.err != nil {
		return nil, g.err
	}
	if schema == nil {
		return nil, fmt.Errorf("step %s has no schema", step.ID)
	}
	sch, err := gate.CompileSchema(schema.Location, schema.Doc)
	if err != nil {
		return nil, err
	}
	specs := make([]gate.RuleSpec, len(rules))
	for i, r := range rules {
		specs[i] = gate.RuleSpec{Expr: r.Expr, Message: r.Message, OnFail: string(r.OnFail)}
	}
	compiled, err := gate.New(g.env, sch, specs)
	if err != nil {
		return nil, err
	}
	actual, _ := g.cache.LoadOrStore(step, compiled)
	return actual.(*gate.Gate), nil
}

// ruleVars are the variables rules see besides output.
func ruleVars(call *domain.StepCall) map[string]any {
	return map[string]any{"inputs": call.Vars["inputs"], "steps": call.Vars["steps"], "run": call.Vars["run"]}
}

// reviewOutput is what a step that needs a person holds: the exact value shown, its hash (a
// decision is bound to it), and why.
func reviewOutput(value any, verdict gate.Verdict) (map[string]any, error) {
	canon, err := domain.CanonicalJSON(value)
	if err != nil {
		return nil, err
	}
	return map[string]any{"proposal": value, "proposal_hash": gate.Hash(canon), "reasons": verdict.Reasons}, nil
}
