package gate

import (
	"fmt"
	"sort"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
	"github.com/santhosh-tekuri/jsonschema/v5"
)

// ruleCostLimit bounds one rule's evaluation, so a rule over a huge proposal cannot stall a run.
const ruleCostLimit = 1_000_000

// Rule is a compiled policy rule.
type Rule struct {
	Expr    string
	Message string
	OnFail  string
	program cel.Program
}

// Gate is a compiled schema plus rules; it is safe for concurrent use.
type Gate struct {
	schema *jsonschema.Schema
	rules  []Rule
}

// RuleSpec describes a rule before compilation.
type RuleSpec struct {
	Expr    string
	Message string
	OnFail  string
}

// Env builds the CEL environment rules are written against: output, inputs, steps and run.
func Env() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("output", cel.DynType),
		cel.Variable("inputs", cel.DynType),
		cel.Variable("steps", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("run", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(), ext.Encoders(), ext.Math(), ext.Lists(), ext.Sets(),
		cel.CrossTypeNumericComparisons(true),
	)
}

// New compiles a gate. env comes from Env and may be shared.
func New(env *cel.Env, schema *jsonschema.Schema, rules []RuleSpec) (*Gate, error) {
	g := &Gate{schema: schema}
	var guard cel.ProgramOption
	if len(rules) > 0 {
		var err error
		if guard, err = SizeGuard(env); err != nil {
			return nil, err
		}
	}
	for _, r := range rules {
		ast, iss := env.Compile(r.Expr)
		if iss != nil && iss.Err() != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Expr, iss.Err())
		}
		prg, err := env.Program(ast, cel.CostLimit(ruleCostLimit), guard)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.Expr, err)
		}
		onFail := r.OnFail
		if onFail == "" {
			onFail = Reject
		}
		g.rules = append(g.rules, Rule{Expr: r.Expr, Message: r.Message, OnFail: onFail, program: prg})
	}
	return g, nil
}

// Check validates a value (decoded JSON) against the schema, then, if it conforms, every rule.
// A rule that errors or yields a non-boolean counts as failed. The decision is reject when the
// schema or any reject rule fails, review when only review rules fail, pass otherwise.
func (g *Gate) Check(value any, vars map[string]any) Verdict {
	if reasons := nonFinite(value, "", nil); len(reasons) > 0 {
		sort.Slice(reasons, func(i, j int) bool { return reasons[i].Path < reasons[j].Path })
		return Verdict{Decision: Reject, Reasons: reasons}
	}
	if g.schema != nil {
		if reasons := Violations(g.schema.Validate(value)); len(reasons) > 0 {
			return Verdict{Decision: Reject, Reasons: reasons}
		}
	}
	activation := Budgeted(vars)
	activation["output"] = value
	decision := Pass
	var reasons []Reason
	for _, r := range g.rules {
		out, _, err := r.program.Eval(activation)
		ok := false
		msg := r.Message
		switch {
		case err != nil:
			msg = fmt.Sprintf("%s (rule could not be evaluated: %v)", r.Message, err)
		default:
			b, isBool := out.Value().(bool)
			ok = isBool && b
			if !isBool {
				msg = fmt.Sprintf("%s (rule yields %s, not a boolean)", r.Message, out.Type())
			}
		}
		if ok {
			continue
		}
		reasons = append(reasons, Reason{Keyword: "rule", Message: msg, OnFail: r.OnFail})
		if r.OnFail == Reject {
			decision = Reject
		} else if decision == Pass {
			decision = Review
		}
	}
	return Verdict{Decision: decision, Reasons: reasons}
}
