package dsl

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"

	"github.com/pipectl/pipectl/internal/gate"
)

// MaxExprBytes bounds what one expression evaluation may build and yield; see gate.SizeGuard.
const MaxExprBytes = gate.MaxExprBytes

// evalCostLimit bounds the work one expression may do at run time, so a pipeline cannot spin
// a worker on a huge comprehension.
const evalCostLimit = 10_000_000

// Evaluator evaluates templates at run time. Programs are compiled once per expression text
// and shared; it is safe for concurrent use.
type Evaluator struct {
	x        *Expressions
	programs sync.Map // string -> cel.Program
	// templates caches ParseTemplate by text: a pipeline's templates are rendered at every
	// run, and their text never changes.
	templates sync.Map // string -> parsedTemplate
}

type parsedTemplate struct {
	t   Template
	err error
}

func (e *Evaluator) template(x string) (Template, error) {
	if v, ok := e.templates.Load(x); ok {
		p := v.(parsedTemplate)
		return p.t, p.err
	}
	t, err := ParseTemplate(x)
	e.templates.Store(x, parsedTemplate{t, err})
	return t, err
}

// NewEvaluator builds an evaluator over an expression environment.
func NewEvaluator(x *Expressions) *Evaluator { return &Evaluator{x: x} }

func (e *Evaluator) program(src string) (cel.Program, error) {
	if p, ok := e.programs.Load(src); ok {
		return p.(cel.Program), nil
	}
	compiled, issues := e.x.Compile(src)
	if len(issues) > 0 {
		return nil, fmt.Errorf("expression %q: %s", src, issues[0].Msg)
	}
	p, err := e.x.env.Program(compiled, cel.CostLimit(evalCostLimit), e.x.guard)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", src, err)
	}
	e.programs.Store(src, p)
	return p, nil
}

// Eval evaluates one CEL expression (no ${{ }}) and returns a JSON-compatible value.
func (e *Evaluator) Eval(src string, vars map[string]any) (any, error) {
	p, err := e.program(src)
	if err != nil {
		return nil, err
	}
	out, _, err := p.Eval(gate.BudgetedActivation(vars))
	if err != nil {
		return nil, fmt.Errorf("evaluating %s: %w", strings.TrimSpace(src), err)
	}
	// A result may hold one large value many times over without building anything (a list of
	// references); written out it would be that many copies.
	if n := gate.ValueSize(out, MaxExprBytes); n > MaxExprBytes {
		return nil, fmt.Errorf("evaluating %s: the result is over %d bytes; an expression may yield at most that", strings.TrimSpace(src), MaxExprBytes)
	}
	return Native(out)
}

// Render evaluates every template inside v: a string that is exactly one placeholder becomes
// the typed value; other strings get each result spliced in as text. Maps and lists are walked.
func (e *Evaluator) Render(v any, vars map[string]any) (any, error) {
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, "${{") {
			return x, nil
		}
		t, err := e.template(x)
		if err != nil {
			return nil, err
		}
		if t.Single() {
			return e.Eval(t.Placeholders[0].Expr, vars)
		}
		var b strings.Builder
		last := 0
		for _, ph := range t.Placeholders {
			b.WriteString(x[last:ph.Start])
			val, err := e.Eval(ph.Expr, vars)
			if err != nil {
				return nil, err
			}
			b.WriteString(Text(val))
			if b.Len() > MaxExprBytes {
				return nil, fmt.Errorf("the text of %q is over %d bytes", x[:min(len(x), 60)], MaxExprBytes)
			}
			last = ph.End
		}
		b.WriteString(x[last:])
		return b.String(), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			r, err := e.Render(val, vars)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			r, err := e.Render(val, vars)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// Text converts a value to the text a template splices in: strings as they are, null as
// nothing, numbers in their shortest form, and maps and lists as JSON.
func Text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Native converts a CEL value into plain JSON-compatible Go values, keeping integers as int64.
func Native(v ref.Val) (any, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return int64(x), nil
	case types.Double:
		if math.IsInf(float64(x), 0) || math.IsNaN(float64(x)) {
			return nil, fmt.Errorf("expression yields %v, which JSON cannot hold", float64(x))
		}
		return float64(x), nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	case traits.Mapper:
		out := map[string]any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			val, err := Native(x.Get(k))
			if err != nil {
				return nil, err
			}
			key, err := Native(k)
			if err != nil {
				return nil, err
			}
			out[Text(key)] = val
		}
		return out, nil
	case traits.Lister:
		var out []any
		it := x.Iterator()
		for it.HasNext() == types.True {
			val, err := Native(it.Next())
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
	if v.Type() == types.ErrType {
		return nil, fmt.Errorf("%v", v)
	}
	// Anything else (optional values, types): its native form if JSON can hold it.
	native := v.Value()
	if _, err := json.Marshal(native); err != nil {
		return nil, fmt.Errorf("expression yields a %s, which JSON cannot hold", v.Type())
	}
	return native, nil
}
