package gate

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/functions"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
)

// MaxExprBytes bounds what one expression evaluation may build, counted as the size its values
// would have as text: every string, list element and map entry it creates through the
// functions that grow data, and its result. CEL's cost limit charges a call only after the call
// has run, so `lists.range(100000).map(x, inputs.s).join("")` would allocate the whole string
// before being stopped; the guard predicts a call's result size from its arguments and refuses
// it before it runs.
const MaxExprBytes = 32 << 20

// budgetVar is the hidden activation variable that carries an evaluation's size budget.
// It cannot be named in an expression (no identifier contains a space).
const budgetVar = "pipectl budget"

// Budgeted returns a copy of an evaluation's variables with a fresh budget of MaxExprBytes:
// each evaluation has its own.
func Budgeted(vars map[string]any) map[string]any {
	act := make(map[string]any, len(vars)+1)
	for k, v := range vars {
		act[k] = v
	}
	act[budgetVar] = &sizeBudget{limit: MaxExprBytes}
	return act
}

// BudgetedActivation is Budgeted without copying the variables: names are looked up in vars,
// which the evaluation does not change, and the fresh budget sits beside them.
func BudgetedActivation(vars map[string]any) interpreter.Activation {
	return &budgeted{vars: vars, budget: sizeBudget{limit: MaxExprBytes}}
}

type budgeted struct {
	vars   map[string]any
	budget sizeBudget
}

func (b *budgeted) ResolveName(name string) (any, bool) {
	if name == budgetVar {
		return &b.budget, true
	}
	v, ok := b.vars[name]
	return v, ok
}

func (b *budgeted) Parent() interpreter.Activation { return nil }

// ValueSize is the size of a value as text (see sizeOf), counted no further than limit.
func ValueSize(v ref.Val, limit int64) int64 { return sizeOf(v, limit) }

// sizeBudget counts what one evaluation has built. One evaluation runs on one goroutine.
type sizeBudget struct {
	used, limit int64
}

func (b *sizeBudget) charge(n int64) bool {
	b.used += n
	return b.used <= b.limit
}

// growing are the functions whose result can be much larger than any one argument, with how to
// predict that size. Everything else returns a value no larger than its inputs, or a number.
var growing = map[string]func(args []ref.Val, left int64) int64{
	operators.Add: func(args []ref.Val, left int64) int64 {
		if len(args) != 2 {
			return 0
		}
		if _, ok := args[0].(traits.MutableLister); ok {
			// The accumulator of a comprehension: appended to in place, only the new element is new.
			return sizeOf(args[1], left)
		}
		return sizeOf(args[0], left) + sizeOf(args[1], left)
	},
	"join": func(args []ref.Val, left int64) int64 {
		n := sizeOf(args[0], left)
		if len(args) == 2 {
			if l, ok := args[0].(traits.Sizer); ok {
				if c, ok := l.Size().(types.Int); ok {
					n += int64(c) * int64(len(celString(args[1])))
				}
			}
		}
		return n
	},
	"replace": func(args []ref.Val, _ int64) int64 {
		if len(args) < 3 {
			return 0
		}
		s, old, repl := celString(args[0]), celString(args[1]), celString(args[2])
		count := int64(utf8.RuneCountInString(s) + 1)
		if old != "" {
			count = int64(strings.Count(s, old))
		}
		if len(args) == 4 {
			if limit, ok := args[3].(types.Int); ok && limit >= 0 && int64(limit) < count {
				count = int64(limit)
			}
		}
		return int64(len(s)) + count*max(int64(len(repl))-int64(len(old)), 0)
	},
	"format": func(args []ref.Val, left int64) int64 {
		var n int64
		for _, a := range args {
			n += sizeOf(a, left)
		}
		return n
	},
	"strings.quote": func(args []ref.Val, left int64) int64 {
		return 6 * sizeOf(args[0], left) // \uNNNN per byte at worst
	},
	"base64.encode": func(args []ref.Val, left int64) int64 {
		return 2 * sizeOf(args[0], left)
	},
	"lists.range": func(args []ref.Val, _ int64) int64 {
		if n, ok := args[0].(types.Int); ok && n > 0 {
			return 8 * int64(n)
		}
		return 0
	},
}

func celString(v ref.Val) string {
	s, _ := v.(types.String)
	return string(s)
}

// sizeOf is the size of a value as text: string and bytes lengths, 8 for a scalar, and the sum
// of the elements of lists and maps, counted again wherever a value is referenced again, as
// it would be when written out. It stops counting once past limit.
func sizeOf(v ref.Val, limit int64) int64 {
	switch x := v.(type) {
	case types.String:
		return int64(len(x))
	case types.Bytes:
		return int64(len(x))
	case traits.Mapper:
		n := int64(8)
		for it := x.Iterator(); it.HasNext() == types.True && n <= limit; {
			k := it.Next()
			n += sizeOf(k, limit-n)
			n += sizeOf(x.Get(k), limit-n)
		}
		return n
	case traits.Lister:
		n := int64(8)
		for it := x.Iterator(); it.HasNext() == types.True && n <= limit; {
			n += sizeOf(it.Next(), limit-n)
		}
		return n
	}
	return 8
}

// guardedCall runs a growing function only when the result it would build fits in what is
// left of the evaluation's budget.
type guardedCall struct {
	interpreter.InterpretableCall
	predict func(args []ref.Val, left int64) int64
	impl    *functions.Overload
}

func (g *guardedCall) Eval(a interpreter.Activation) ref.Val {
	return g.Exec(interpreter.AsFrame(a))
}

// Exec follows the interpreter's own call: strict arguments, the overload's operand trait,
// then the receiver.
func (g *guardedCall) Exec(frame *interpreter.ExecutionFrame) ref.Val {
	exprs := g.Args()
	args := make([]ref.Val, len(exprs))
	for i, e := range exprs {
		args[i] = e.Exec(frame)
		if types.IsUnknownOrError(args[i]) {
			return args[i]
		}
	}
	if v, ok := frame.ResolveName(budgetVar); ok {
		if b, ok := v.(*sizeBudget); ok {
			if n := g.predict(args, b.limit-b.used+1); !b.charge(n) {
				return types.NewErrWithNodeID(g.ID(), "%s would build about %d bytes; an expression may build at most %d", g.Function(), n, b.limit)
			}
		}
	}
	if g.impl.OperandTrait == 0 || args[0].Type().HasTrait(g.impl.OperandTrait) {
		switch {
		case len(args) == 1 && g.impl.Unary != nil:
			return types.LabelErrNode(g.ID(), g.impl.Unary(args[0]))
		case len(args) == 2 && g.impl.Binary != nil:
			return types.LabelErrNode(g.ID(), g.impl.Binary(args[0], args[1]))
		case g.impl.Function != nil:
			return types.LabelErrNode(g.ID(), g.impl.Function(args...))
		}
	}
	if r, ok := args[0].(traits.Receiver); ok {
		return types.LabelErrNode(g.ID(), r.Receive(g.Function(), g.OverloadID(), args[1:]))
	}
	return types.NewErrWithNodeID(g.ID(), "no such overload: %s", g.Function())
}

// SizeGuard is the program option that puts growing calls under the budget of Budgeted
// variables; an evaluation without one is not limited. The overloads are the environment's own
// bindings, found the way the planner finds them: by overload id, else by function name.
func SizeGuard(env *cel.Env) (cel.ProgramOption, error) {
	disp := interpreter.NewDispatcher()
	for name, fn := range env.Functions() {
		if growing[name] == nil {
			continue
		}
		bindings, err := fn.Bindings()
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", name, err)
		}
		if err := disp.Add(bindings...); err != nil {
			return nil, fmt.Errorf("function %s: %w", name, err)
		}
	}
	return cel.CustomDecorator(func(i interpreter.Interpretable) (interpreter.Interpretable, error) {
		call, ok := i.(interpreter.InterpretableCall)
		if !ok {
			return i, nil
		}
		predict := growing[call.Function()]
		if predict == nil || len(call.Args()) == 0 {
			return i, nil
		}
		impl, found := disp.FindOverload(call.OverloadID())
		if !found {
			impl, found = disp.FindOverload(call.Function())
		}
		if !found {
			return i, nil
		}
		return &guardedCall{InterpretableCall: call, predict: predict, impl: impl}, nil
	}), nil
}
