package dsl

import (
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
)

// verdict is what a compiled schema proves about the value at a path, for one sink class.
type verdict struct {
	ok bool
	// constraint is what keeps the value safe, when ok.
	constraint domain.Constraint
	// where is the schema location judged (a JSON pointer inside the schema document, after
	// the library resolved $ref and $id); why says what falls short, when not ok.
	where string
	why   string
}

// explain is the verdict's reason with what would make the value safe in class.
func (v verdict) explain(class domain.SinkClass) string {
	return v.why + "; " + remedy(class)
}

// judge decides, from the schema as the gate's library compiled it, whether every value the
// schema admits at path is safe in class. Nothing is read from the raw schema document: drafts,
// $ref, $id and pointer escapes mean what the library made of them.
func judge(s *jsonschema.Schema, path []Segment, class domain.SinkClass) verdict {
	return judgeAt(s, path, class, 0)
}

func judgeAt(s *jsonschema.Schema, path []Segment, class domain.SinkClass, depth int) verdict {
	if s == nil {
		return verdict{why: "nothing in the schema checks it"}
	}
	if depth > maxTaintDepth {
		return verdict{where: schemaPointer(s), why: "the schema nests $ref too deeply to follow"}
	}
	if s.Always != nil {
		if !*s.Always {
			return verdict{ok: true, where: schemaPointer(s), constraint: domain.Constraint{Kind: domain.ConstraintEnum}}
		}
		return verdict{where: schemaPointer(s), why: "the schema is true and admits anything"}
	}
	// Every keyword that applies to the value must hold, so one that proves it safe suffices.
	var first verdict
	consider := func(v verdict) bool {
		if v.ok {
			first = v
			return true
		}
		if first.why == "" {
			first = v
		}
		return false
	}
	if s.Ref != nil && consider(judgeAt(s.Ref, path, class, depth+1)) {
		return first
	}
	for _, sub := range s.AllOf {
		if consider(judgeAt(sub, path, class, depth+1)) {
			return first
		}
	}
	for _, alts := range [][]*jsonschema.Schema{s.AnyOf, s.OneOf} {
		if v, ok := judgeAlternatives(alts, path, class, depth); ok {
			return v
		}
	}
	var own verdict
	if len(path) == 0 {
		own = judgeLeaf(s, class)
	} else {
		own = judgeChild(s, path, class, depth)
	}
	if consider(own) {
		return first
	}
	// A schema that is only a reference says nothing of its own: the referenced schema's
	// reason is the useful one. Otherwise the schema's own verdict names the deepest place.
	if first.why != "" && (own.why == "" || len(path) == 0 && bare(s)) {
		return first
	}
	return own
}

// bare reports whether a schema has no keyword of its own that could constrain a leaf.
func bare(s *jsonschema.Schema) bool {
	return len(s.Types) == 0 && s.Enum == nil && len(s.Constant) == 0 && s.Pattern == nil && s.Format == ""
}

func judgeAlternatives(alts []*jsonschema.Schema, path []Segment, class domain.SinkClass, depth int) (verdict, bool) {
	if len(alts) == 0 {
		return verdict{}, false
	}
	var branches []domain.Constraint
	for _, alt := range alts {
		v := judgeAt(alt, path, class, depth+1)
		if !v.ok {
			return verdict{}, false
		}
		branches = append(branches, v.constraint)
	}
	return verdict{ok: true, where: schemaPointer(alts[0]), constraint: domain.Constraint{Kind: domain.ConstraintAnyOf, Any: branches}}, true
}

// judgeChild follows one path segment into an object or a list.
func judgeChild(s *jsonschema.Schema, path []Segment, class domain.SinkClass, depth int) verdict {
	seg, rest := path[0], path[1:]
	var applicable []*jsonschema.Schema
	every := seg.Dynamic
	switch {
	case !seg.IsIndex:
		if p, ok := s.Properties[seg.Field]; ok {
			applicable = append(applicable, p)
		}
		matched := len(applicable) > 0
		for re, p := range s.PatternProperties {
			if re.MatchString(seg.Field) {
				applicable = append(applicable, p)
				matched = true
			}
		}
		if !matched {
			switch ap := s.AdditionalProperties.(type) {
			case bool:
				if !ap {
					return verdict{ok: true, where: joinPointer(schemaPointer(s), "additionalProperties"), constraint: domain.Constraint{Kind: domain.ConstraintEnum}}
				}
			case *jsonschema.Schema:
				applicable = append(applicable, ap)
			}
		}
		if len(applicable) == 0 {
			return verdict{where: joinPointer(schemaPointer(s), "properties", seg.Field), why: fmt.Sprintf("the schema does not describe the field %q", seg.Field)}
		}
	case every:
		// Any element (or any field, for a computed key) may be chosen: each schema that can
		// apply to one must keep it safe.
		var all []*jsonschema.Schema
		all = append(all, s.PrefixItems...)
		if s.Items2020 != nil {
			all = append(all, s.Items2020)
		}
		switch it := s.Items.(type) {
		case *jsonschema.Schema:
			all = append(all, it)
		case []*jsonschema.Schema:
			all = append(all, it...)
			if ai, ok := s.AdditionalItems.(*jsonschema.Schema); ok {
				all = append(all, ai)
			}
		}
		for _, k := range sortedKeys(s.Properties) {
			all = append(all, s.Properties[k])
		}
		for _, p := range s.PatternProperties {
			all = append(all, p)
		}
		if ap, ok := s.AdditionalProperties.(*jsonschema.Schema); ok {
			all = append(all, ap)
		}
		if len(all) == 0 {
			return verdict{where: joinPointer(schemaPointer(s), "items"), why: "the schema does not describe the elements"}
		}
		if where, why := undescribed(s); why != "" {
			return verdict{where: where, why: why}
		}
		var cons []domain.Constraint
		for _, sub := range all {
			v := judgeAt(sub, rest, class, depth+1)
			if !v.ok {
				return v
			}
			cons = append(cons, v.constraint)
		}
		c := cons[0]
		if len(cons) > 1 {
			c = domain.Constraint{Kind: domain.ConstraintAnyOf, Any: cons}
		}
		return verdict{ok: true, where: schemaPointer(all[0]), constraint: c}
	default:
		i := seg.Index
		switch {
		case i < len(s.PrefixItems):
			applicable = append(applicable, s.PrefixItems[i])
		case s.Items2020 != nil:
			applicable = append(applicable, s.Items2020)
		}
		switch it := s.Items.(type) {
		case *jsonschema.Schema:
			applicable = append(applicable, it)
		case []*jsonschema.Schema:
			if i < len(it) {
				applicable = append(applicable, it[i])
			} else if ai, ok := s.AdditionalItems.(*jsonschema.Schema); ok {
				applicable = append(applicable, ai)
			}
		}
		if len(applicable) == 0 {
			return verdict{where: joinPointer(schemaPointer(s), "items"), why: "the schema does not describe the elements"}
		}
	}
	var first verdict
	for _, sub := range applicable {
		v := judgeAt(sub, rest, class, depth+1)
		if v.ok {
			return v
		}
		if first.why == "" {
			first = v
		}
	}
	return first
}

// undescribed says which elements or fields a computed index could reach that no schema of s
// describes (the schema then admits anything there), or "" when s describes every one.
func undescribed(s *jsonschema.Schema) (where, why string) {
	allows := func(t string) bool { return len(s.Types) == 0 || slices.Contains(s.Types, t) }
	if allows("object") {
		if _, ok := s.AdditionalProperties.(*jsonschema.Schema); !ok && s.AdditionalProperties != false {
			return joinPointer(schemaPointer(s), "additionalProperties"),
				"a computed key may name a field that neither properties nor patternProperties describe (set additionalProperties to false or to a schema that keeps every field safe, and type to the one you index)"
		}
	}
	if allows("array") {
		bounded := func(n int) bool { return s.MaxItems >= 0 && s.MaxItems <= n }
		covered := s.Items2020 != nil || bounded(len(s.PrefixItems)) && len(s.PrefixItems) > 0
		switch it := s.Items.(type) {
		case *jsonschema.Schema:
			covered = true
		case []*jsonschema.Schema:
			_, rest := s.AdditionalItems.(*jsonschema.Schema)
			covered = covered || rest || s.AdditionalItems == false || bounded(len(it))
		}
		if !covered {
			return joinPointer(schemaPointer(s), "items"),
				"a computed index may pick an element after those prefixItems describe (set items to a schema that keeps every element safe, or maxItems, and type to the one you index)"
		}
	}
	return "", ""
}

// judgeLeaf decides for the value a schema describes directly.
func judgeLeaf(s *jsonschema.Schema, class domain.SinkClass) verdict {
	where := schemaPointer(s)
	if len(s.Constant) > 0 {
		return verdict{ok: true, where: where, constraint: domain.Constraint{Kind: domain.ConstraintEnum, Values: s.Constant[:1]}}
	}
	if s.Enum != nil {
		return verdict{ok: true, where: where, constraint: domain.Constraint{Kind: domain.ConstraintEnum, Values: s.Enum}}
	}
	if len(s.Types) == 0 {
		return verdict{where: where, why: "the schema admits a value of any type"}
	}
	if class == domain.SinkFixed {
		if slices.Equal(nonNull(s.Types), []string{"boolean"}) {
			return verdict{ok: true, where: where, constraint: domain.Constraint{Kind: domain.ConstraintBoolean, Values: []any{true, false}, AllowNull: slices.Contains(s.Types, "null")}}
		}
		return verdict{where: where, why: fmt.Sprintf("it is %s the data chooses", article(strings.Join(s.Types, " or ")))}
	}
	var c domain.Constraint
	c.AllowNull = slices.Contains(s.Types, "null")
	if c.AllowNull && class.ForbidsEmpty() {
		return verdict{where: where, why: `it may be null, which is written as the empty text and drops a path segment (.../users/ instead of .../users/42)`}
	}
	for _, t := range s.Types {
		switch t {
		case "null":
		case "boolean":
			if c.Kind == "" {
				c.Kind, c.Values = domain.ConstraintBoolean, []any{true, false}
			}
		case "integer", "number":
			if class == domain.SinkArg && !nonNegative(s, t == "integer") {
				why := fmt.Sprintf("%s may be negative and so start with \"-\" (set minimum: 0)", article(t))
				if t == "number" && s.Minimum != nil && s.Minimum.Sign() == 0 {
					why = `a number with minimum 0 still admits -0, whose text starts with "-" (use exclusiveMinimum: 0, or an integer)`
				}
				return verdict{where: where, why: why}
			}
			kind := domain.ConstraintNumber
			if t == "integer" {
				kind = domain.ConstraintInteger
			}
			c.Kind, c.NonNegative = kind, class == domain.SinkArg
		case "string":
			v := judgeString(s, class)
			if !v.ok {
				return v
			}
			c.Kind, c.Pattern, c.Format = v.constraint.Kind, v.constraint.Pattern, v.constraint.Format
		default:
			return verdict{where: where, why: fmt.Sprintf("it may be %s, whose JSON text is not constrained", article(t))}
		}
	}
	if len(nonNull(s.Types)) > 1 {
		// Mixed types (say string and integer) keep each form safe, but the run-time check
		// cannot express the union with one kind: it checks the text instead.
		c = domain.Constraint{}
	}
	return verdict{ok: true, where: where, constraint: c}
}

func nonNull(types []string) []string {
	var out []string
	for _, t := range types {
		if t != "null" {
			out = append(out, t)
		}
	}
	return out
}

// nonNegative reports whether a numeric schema keeps the value at zero or above, so that its
// text never starts with "-" (-0 included: a number's minimum 0 admits -0, exclusiveMinimum 0 does not).
func nonNegative(s *jsonschema.Schema, integer bool) bool {
	zero := new(big.Rat)
	if s.ExclusiveMinimum != nil && s.ExclusiveMinimum.Cmp(zero) >= 0 {
		return true
	}
	if s.Minimum != nil {
		if integer {
			return s.Minimum.Cmp(zero) >= 0
		}
		return s.Minimum.Cmp(zero) > 0
	}
	if integer && s.ExclusiveMinimum != nil && s.ExclusiveMinimum.Cmp(big.NewRat(-1, 1)) >= 0 {
		return true
	}
	return false
}

func judgeString(s *jsonschema.Schema, class domain.SinkClass) verdict {
	where := schemaPointer(s)
	var whys []string
	if s.Pattern != nil {
		why := patternVerdict(s.Pattern, class)
		if why == "" {
			return verdict{ok: true, where: where, constraint: domain.Constraint{Kind: domain.ConstraintPattern, Pattern: s.Pattern.String()}}
		}
		whys = append(whys, why)
	}
	if s.Format != "" {
		switch {
		case slices.Contains(domain.SafeFormats, s.Format):
			r, bad := domain.FormatUnsafeRune(s.Format, class)
			if !bad {
				return verdict{ok: true, where: where, constraint: domain.Constraint{Kind: domain.ConstraintFormat, Format: s.Format}}
			}
			whys = append(whys, fmt.Sprintf("format %q admits %s", s.Format, describeRune(r)))
		case jsonschema.Formats[s.Format] == nil:
			whys = append(whys, fmt.Sprintf("format %q is unknown to the schema library, which then checks nothing", s.Format))
		default:
			whys = append(whys, fmt.Sprintf("format %q admits text that is dangerous here (only %s are safe)", s.Format, strings.Join(domain.SafeFormats, ", ")))
		}
	}
	if len(whys) == 0 {
		whys = append(whys, "it admits any string")
	}
	return verdict{where: where, why: strings.Join(whys, "; ")}
}

// formatsIn names the safe formats whose every value is safe text in class.
func formatsIn(class domain.SinkClass) string {
	var ok []string
	for _, f := range domain.SafeFormats {
		if _, bad := domain.FormatUnsafeRune(f, class); !bad {
			ok = append(ok, f)
		}
	}
	return "a format (" + strings.Join(ok, ", ") + ")"
}

// remedy says what would make a value safe in a class.
func remedy(class domain.SinkClass) string {
	switch class {
	case domain.SinkFixed:
		return "only enum or const values may choose it"
	case domain.SinkArg:
		return `use enum, const, a boolean, an integer with minimum 0, ` + formatsIn(class) + `, or a pattern anchored with ^...$ that cannot start with "-" or hold NUL, such as ^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	case domain.SinkArgTail, domain.SinkEnv:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ that excludes NUL, such as ^[^\x00]*$`
	case domain.SinkURLPath, domain.SinkPath:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ whose characters exclude / ? # % \ and spaces and that cannot be empty, "." or "..", such as ^[A-Za-z0-9_-]+$`
	case domain.SinkQueryValue:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ whose characters exclude / ? # % \ and spaces and that cannot be "." or "..", such as ^[A-Za-z0-9_-]+$`
	case domain.SinkURLQuery:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ whose characters exclude / ? # % \ & = + ; and spaces, such as ^[A-Za-z0-9_-]+$, or put the value in the step's query map`
	case domain.SinkBodyText:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ whose characters exclude quotes, \ & = + % ; < > and control characters, such as ^[A-Za-z0-9_ .-]+$; or write the body as a YAML map, which is sent as JSON with every value encoded`
	case domain.SinkHeader:
		return `use enum, const, a boolean or number, ` + formatsIn(class) + `, or a pattern anchored with ^...$ that excludes CR and LF, such as ^[ -~]*$`
	}
	return "use enum or const"
}

// schemaPointer is the JSON pointer of a compiled schema inside its document: the part of its
// absolute location after '#', or "/" for a document's root.
func schemaPointer(s *jsonschema.Schema) string {
	loc := s.Location
	i := strings.IndexByte(loc, '#')
	if i < 0 || loc[i+1:] == "" {
		return "/"
	}
	return loc[i+1:]
}

func joinPointer(base string, toks ...string) string {
	out := strings.TrimSuffix(base, "/")
	for _, t := range toks {
		out += "/" + strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1")
	}
	return out
}

func article(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an " + noun
	}
	return "a " + noun
}
