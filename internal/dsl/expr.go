package dsl

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"

	"github.com/pipectl/pipectl/internal/gate"
)

// Variables an expression may name. Which of them are in scope depends on where the
// expression stands; the checker declares them all and the scope check narrows them.
const (
	VarInputs   = "inputs"
	VarSteps    = "steps"
	VarRun      = "run"
	VarItem     = "item"
	VarIndex    = "index"
	VarSecrets  = "secrets"
	VarOutput   = "output"
	VarResponse = "response"
	// VarBody is a webhook delivery's parsed body, in scope only in triggers.webhook.input.
	VarBody = "body"
)

// RunFields are the fields of the run variable.
var RunFields = []string{"id", "idempotency_key", "pipeline"}

// Expressions compiles CEL for pipelines. Building the environment costs milliseconds, so one
// value serves a whole process; it is safe for concurrent use.
type Expressions struct {
	env *cel.Env
	// guard holds evaluations to MaxExprBytes.
	guard cel.ProgramOption
	// compiled caches Compile by source: compiling is deterministic, the same expressions recur
	// across a repository's pipelines, and a cold process compiles ahead on another core.
	compiled sync.Map // string -> *compileResult
}

// compileResult is computed once per source, however many goroutines ask at once.
type compileResult struct {
	once   sync.Once
	ast    *cel.Ast
	issues []ExprIssue
}

// NewExpressions builds the CEL environment with pipectl's variables and the standard extensions.
func NewExpressions() (*Expressions, error) {
	env, err := cel.NewEnv(
		cel.Variable(VarInputs, cel.DynType),
		cel.Variable(VarSteps, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(VarRun, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(VarItem, cel.DynType),
		cel.Variable(VarIndex, cel.IntType),
		cel.Variable(VarSecrets, cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable(VarOutput, cel.DynType),
		cel.Variable(VarResponse, cel.DynType),
		cel.Variable(VarBody, cel.DynType),
		ext.Strings(),
		ext.Encoders(),
		ext.Math(),
		ext.Lists(),
		ext.Sets(),
		// JSON numbers reach expressions as int or double; comparing them must not depend on
		// which one a producer happened to write.
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, fmt.Errorf("building the expression environment: %w", err)
	}
	guard, err := gate.SizeGuard(env)
	if err != nil {
		return nil, fmt.Errorf("building the expression environment: %w", err)
	}
	return &Expressions{env: env, guard: guard}, nil
}

// Env exposes the environment so that the engine can build programs from checked ASTs.
func (x *Expressions) Env() *cel.Env { return x.env }

// ExprIssue is a compile error at a byte offset of the expression source.
type ExprIssue struct {
	Offset int
	Msg    string
}

// Compile parses and type-checks src. Results are cached; the AST is shared and read-only.
func (x *Expressions) Compile(src string) (*cel.Ast, []ExprIssue) {
	v, _ := x.compiled.LoadOrStore(src, &compileResult{})
	r := v.(*compileResult)
	r.once.Do(func() { r.ast, r.issues = x.compile(src) })
	return r.ast, r.issues
}

func (x *Expressions) compile(src string) (*cel.Ast, []ExprIssue) {
	checked, iss := x.env.Compile(src)
	if iss == nil || iss.Err() == nil {
		return checked, nil
	}
	var out []ExprIssue
	for _, e := range iss.Errors() {
		off := 0
		if e.Location != nil && e.Location.Line() > 0 {
			off = byteOffsetOfLineCol(src, e.Location.Line(), e.Location.Column())
		}
		out = append(out, ExprIssue{Offset: off, Msg: cleanCELMessage(e.Message)})
	}
	return nil, out
}

var celExpecting = regexp.MustCompile(` expecting (\{[^}]*\}|'[^']*')`)

// cleanCELMessage shortens the parser's token lists, which name grammar symbols, not help.
func cleanCELMessage(m string) string {
	m = strings.TrimSuffix(m, " (in container '')")
	m = strings.Replace(m, "mismatched input '<EOF>'", "unexpected end of expression", 1)
	m = celExpecting.ReplaceAllString(m, "")
	return strings.Replace(m, "Syntax error: ", "syntax error: ", 1)
}

// byteOffsetOfLineCol maps CEL's 1-based line and 0-based rune column to a byte offset.
func byteOffsetOfLineCol(src string, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := strings.IndexByte(src[off:], '\n')
		if i < 0 {
			return len(src)
		}
		off += i + 1
	}
	for c := 0; c < col && off < len(src); c++ {
		_, size := utf8.DecodeRuneInString(src[off:])
		off += size
	}
	return off
}

func byteOffsetOfRune(src string, runes int) int {
	off := 0
	for r := 0; r < runes && off < len(src); r++ {
		_, size := utf8.DecodeRuneInString(src[off:])
		off += size
	}
	return off
}

// Segment is one step of a reference path: a field name, a constant index, or a computed index.
type Segment struct {
	Field   string
	Index   int
	IsIndex bool
	// Dynamic is set when the index is computed at run time.
	Dynamic bool
}

func (s Segment) String() string {
	switch {
	case s.Dynamic:
		return "[*]"
	case s.IsIndex:
		return fmt.Sprintf("[%d]", s.Index)
	}
	return "." + s.Field
}

// Reference is a use of a pipectl variable with the constant path selected from it, such as
// steps.classify.output.team.
type Reference struct {
	Root string
	Path []Segment
	// Offset is the byte offset of the reference in the expression source.
	Offset int
}

func (r Reference) String() string {
	var b strings.Builder
	b.WriteString(r.Root)
	for _, s := range r.Path {
		b.WriteString(s.String())
	}
	return b.String()
}

// References lists every use of a pipectl variable in a compiled expression. Comprehension
// variables that shadow a pipectl name are not reported.
func References(compiled *cel.Ast, src string) []Reference {
	native := compiled.NativeRep()
	info := native.SourceInfo()
	var out []Reference
	var walk func(e ast.Expr, bound map[string]bool)
	walk = func(e ast.Expr, bound map[string]bool) {
		if root, path, dyn, ok := chain(e); ok {
			if !bound[root.AsIdent()] {
				off := 0
				if r, found := info.GetOffsetRange(root.ID()); found {
					off = byteOffsetOfRune(src, int(r.Start))
				}
				out = append(out, Reference{Root: root.AsIdent(), Path: path, Offset: off})
			}
			for _, d := range dyn {
				walk(d, bound)
			}
			return
		}
		switch e.Kind() {
		case ast.CallKind:
			c := e.AsCall()
			if c.IsMemberFunction() {
				walk(c.Target(), bound)
			}
			for _, a := range c.Args() {
				walk(a, bound)
			}
		case ast.SelectKind:
			walk(e.AsSelect().Operand(), bound)
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, bound)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key(), bound)
				walk(me.Value(), bound)
			}
		case ast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), bound)
			}
		case ast.ComprehensionKind:
			comp := e.AsComprehension()
			walk(comp.IterRange(), bound)
			inner := map[string]bool{comp.IterVar(): true, comp.AccuVar(): true}
			if comp.HasIterVar2() {
				inner[comp.IterVar2()] = true
			}
			for k := range bound {
				inner[k] = true
			}
			walk(comp.AccuInit(), bound)
			walk(comp.LoopCondition(), inner)
			walk(comp.LoopStep(), inner)
			walk(comp.Result(), inner)
		}
	}
	walk(native.Expr(), map[string]bool{})
	return out
}

// chain decomposes selections and constant indexes rooted at an identifier. Computed indexes
// become Dynamic segments and their expressions are returned for a separate walk.
func chain(e ast.Expr) (root ast.Expr, path []Segment, dynamic []ast.Expr, ok bool) {
	switch e.Kind() {
	case ast.IdentKind:
		return e, nil, nil, true
	case ast.SelectKind:
		sel := e.AsSelect()
		root, path, dynamic, ok = chain(sel.Operand())
		if !ok {
			return nil, nil, nil, false
		}
		return root, append(path, Segment{Field: sel.FieldName()}), dynamic, true
	case ast.CallKind:
		c := e.AsCall()
		if c.FunctionName() != "_[_]" || len(c.Args()) != 2 {
			return nil, nil, nil, false
		}
		root, path, dynamic, ok = chain(c.Args()[0])
		if !ok {
			return nil, nil, nil, false
		}
		idx := c.Args()[1]
		if idx.Kind() == ast.LiteralKind {
			switch v := idx.AsLiteral().(type) {
			case types.String:
				return root, append(path, Segment{Field: string(v)}), dynamic, true
			case types.Int:
				return root, append(path, Segment{Index: int(v), IsIndex: true}), dynamic, true
			case types.Uint:
				return root, append(path, Segment{Index: int(v), IsIndex: true}), dynamic, true
			}
		}
		return root, append(path, Segment{IsIndex: true, Dynamic: true}), append(dynamic, idx), true
	}
	return nil, nil, nil, false
}
