package dsl

import (
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
)

// Flow is a reference whose value ends up in an expression's result, either as it is (so the
// schema that checked it describes the result's text) or transformed by a computation.
type Flow struct {
	Reference
	// Transformed: the result is computed from the value (lowerAscii, join, format, map, a
	// list literal...), so only a value from a finite set stays under the schema's control.
	Transformed bool
}

// Flows lists what flows from pipectl variables into the result of a compiled expression.
// Parts that only decide (a condition, an index, a comparison, size()) do not flow: their
// result is a boolean or a count chosen among the spec's own alternatives. Numbers do flow
// into a position where a leading "-" matters (negative), so signed is set for such a position.
func Flows(compiled *cel.Ast, src string, signed bool) []Flow {
	native := compiled.NativeRep()
	info := native.SourceInfo()
	var out []Flow
	var walk func(e ast.Expr, transformed bool, bound map[string]bool)
	walk = func(e ast.Expr, transformed bool, bound map[string]bool) {
		if t := native.GetType(e.ID()); t != nil {
			switch t.Kind() {
			case types.BoolKind, types.NullTypeKind, types.UintKind:
				return
			case types.IntKind, types.DoubleKind:
				if !signed {
					return
				}
			}
		}
		if root, path, _, ok := chain(e); ok {
			if !bound[root.AsIdent()] {
				off := 0
				if r, found := info.GetOffsetRange(root.ID()); found {
					off = byteOffsetOfRune(src, int(r.Start))
				}
				out = append(out, Flow{Reference: Reference{Root: root.AsIdent(), Path: path, Offset: off}, Transformed: transformed})
			}
			return
		}
		switch e.Kind() {
		case ast.CallKind:
			c := e.AsCall()
			switch c.FunctionName() {
			case "_+_":
				for _, a := range c.Args() {
					walk(a, transformed, bound)
				}
				return
			case "_?_:_":
				walk(c.Args()[1], transformed, bound)
				walk(c.Args()[2], transformed, bound)
				return
			case "size":
				return
			case "string":
				// string() of a string is the string; of a number or boolean, its text:
				// either way the text the schema describes.
				if len(c.Args()) == 1 && !c.IsMemberFunction() {
					walk(c.Args()[0], transformed, bound)
					return
				}
			case "_[_]":
				// The index only chooses among the container's elements.
				walk(c.Args()[0], true, bound)
				return
			}
			if c.IsMemberFunction() {
				walk(c.Target(), true, bound)
			}
			for _, a := range c.Args() {
				walk(a, true, bound)
			}
		case ast.SelectKind:
			walk(e.AsSelect().Operand(), true, bound)
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, true, bound)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key(), true, bound)
				walk(me.Value(), true, bound)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), true, bound)
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
			walk(comp.IterRange(), true, bound)
			walk(comp.AccuInit(), true, bound)
			walk(comp.LoopStep(), true, inner)
			walk(comp.Result(), true, inner)
		}
	}
	walk(native.Expr(), false, map[string]bool{})
	return out
}
