package dsl

import (
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/pipectl/pipectl/internal/domain"
)

// Flow is a reference whose value ends up in an expression's result, either as it is (so the
// schema that checked it describes the result's text) or transformed by a computation.
type Flow struct {
	Reference
	// Transformed: the result is computed from the value (lowerAscii, join, format, map, a
	// list literal...), so only a value from a finite set stays under the schema's control.
	Transformed bool
	// Number is set when the value reaches the result only through a number (a count, a
	// conversion, arithmetic): the result's text is then a number's, whatever the value was.
	Number NumberUse
	// AfterQueryMark is set when the expression's own text holds a "?" or "#" (as in
	// "?user=" + x): in a url, the value may then stand in the query string or fragment
	// whatever the template before the placeholder says.
	AfterQueryMark bool
}

// NumberUse says whether a value reaches a result only as a number, and whether that number
// may be negative. Such a result is harmless text in most positions, but it still chooses a
// host, a port or a program, and a negative one starts an argument with "-".
type NumberUse int

const (
	// NotNumber: the value's own text (or a computation of it) reaches the result.
	NotNumber NumberUse = iota
	// Unsigned: only a count or an unsigned number computed from the value does.
	Unsigned
	// Signed: only a number, which may be negative, does.
	Signed
)

// Matters reports whether a number computed from untrusted data is dangerous in class: where
// it would choose the scheme, host, port or program, or (when it may be negative) start an
// argument. Elsewhere its text (digits, a point, an exponent, a sign) is safe.
func (n NumberUse) Matters(class domain.SinkClass) bool {
	switch n {
	case Unsigned:
		return class == domain.SinkFixed || class == domain.SinkCode
	case Signed:
		return class == domain.SinkFixed || class == domain.SinkCode || class == domain.SinkArg
	}
	return true
}

// Flows lists what flows from pipectl variables into the result of a compiled expression.
// Parts that only decide (a condition, an index, a comparison) do not flow: their result is a
// boolean or one of the spec's own alternatives. A value that reaches the result only through
// a number (size(), int(), arithmetic) flows with Number set, since a number still chooses a
// host, a port or a program (the caller decides by position with NumberUse.Matters).
func Flows(compiled *cel.Ast, src string) []Flow {
	native := compiled.NativeRep()
	info := native.SourceInfo()
	var out []Flow
	var walk func(e ast.Expr, transformed bool, num NumberUse, bound map[string]bool)
	walk = func(e ast.Expr, transformed bool, num NumberUse, bound map[string]bool) {
		if num == NotNumber {
			num = numberUse(native, e)
		}
		if t := native.GetType(e.ID()); t != nil {
			switch t.Kind() {
			case types.BoolKind, types.NullTypeKind:
				return
			}
		}
		if root, path, _, ok := chain(e); ok {
			if !bound[root.AsIdent()] {
				off := 0
				if r, found := info.GetOffsetRange(root.ID()); found {
					off = byteOffsetOfRune(src, int(r.Start))
				}
				out = append(out, Flow{Reference: Reference{Root: root.AsIdent(), Path: path, Offset: off}, Transformed: transformed, Number: num})
			}
			return
		}
		switch e.Kind() {
		case ast.CallKind:
			c := e.AsCall()
			switch c.FunctionName() {
			case "_+_":
				for _, a := range c.Args() {
					walk(a, transformed, num, bound)
				}
				return
			case "_?_:_":
				walk(c.Args()[1], transformed, num, bound)
				walk(c.Args()[2], transformed, num, bound)
				return
			case "size":
				// A count of the value: it flows as a number (numberUse above).
				for _, a := range c.Args() {
					walk(a, true, num, bound)
				}
				if c.IsMemberFunction() {
					walk(c.Target(), true, num, bound)
				}
				return
			case "string":
				// string() of a string is the string; of a number or boolean, its text:
				// either way the text the schema describes.
				if len(c.Args()) == 1 && !c.IsMemberFunction() {
					walk(c.Args()[0], transformed, num, bound)
					return
				}
			case "_[_]":
				// The index only chooses among the container's elements.
				walk(c.Args()[0], true, num, bound)
				return
			}
			if c.IsMemberFunction() {
				walk(c.Target(), true, num, bound)
			}
			for _, a := range c.Args() {
				walk(a, true, num, bound)
			}
		case ast.SelectKind:
			walk(e.AsSelect().Operand(), true, num, bound)
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, true, num, bound)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key(), true, num, bound)
				walk(me.Value(), true, num, bound)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), true, num, bound)
			}
		case ast.ComprehensionKind:
			comp := e.AsComprehension()
			inner := map[string]bool{comp.IterVar(): true, comp.AccuVar(): true}
			if comp.HasIterVar2() {
				inner[comp.IterVar2()] = true
			}
			for k := range bound {
				inner[k] = true
			}
			walk(comp.IterRange(), true, num, bound)
			walk(comp.AccuInit(), true, num, bound)
			walk(comp.LoopStep(), true, num, inner)
			walk(comp.Result(), true, num, inner)
		}
	}
	walk(native.Expr(), false, NotNumber, map[string]bool{})
	if queryMark(native.Expr()) {
		for i := range out {
			out[i].AfterQueryMark = true
		}
	}
	return out
}

// numberUse says whether an expression's result is a number, and whether it may be negative.
func numberUse(native *ast.AST, e ast.Expr) NumberUse {
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == "size" {
		return Unsigned
	}
	if t := native.GetType(e.ID()); t != nil {
		switch t.Kind() {
		case types.UintKind:
			return Unsigned
		case types.IntKind, types.DoubleKind:
			return Signed
		}
	}
	return NotNumber
}

// queryMark reports whether an expression holds a string constant with "?" or "#".
func queryMark(e ast.Expr) bool {
	found := false
	ast.PostOrderVisit(e, ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() != ast.LiteralKind {
			return
		}
		if s, ok := x.AsLiteral().(types.String); ok && strings.ContainsAny(string(s), "?#") {
			found = true
		}
	}))
	return found
}
