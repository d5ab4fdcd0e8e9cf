package dsl

import (
	"strings"
	"testing"
)

// Keys of an inline schema: a near miss of a keyword is an error, anything else an allowed
// annotation.
func TestInlineSchemaKeywordTypos(t *testing.T) {
	tests := []struct {
		schema string
		want   string // "" when the schema must be accepted
	}{
		{"{type: object, requried: [a]}", `unknown JSON Schema keyword "requried"; did you mean "required"?`},
		{"{type: object, properties: {a: {type: string, maxLenght: 3}}}", `"maxLenght"; did you mean "maxLength"?`},
		{"{type: array, item: {type: string}}", `"item"; did you mean "items"?`},
		{"{anyOf: [{type: string, patern: '^a$'}]}", `"patern"; did you mean "pattern"?`},
		{"{type: object, $defs: {x: {enumm: [a]}}}", `"enumm"; did you mean "enum"?`},
		// Not keywords: property names, annotations, draft-04's id, values of enum and const.
		{"{type: object, properties: {requried: {type: string}, item: {type: string}}}", ""},
		{"{type: string, x-ui-hint: wide, id: '#s'}", ""},
		{"{enum: [{requried: 1}], const: {item: 2}}", ""},
		{"{type: object, examples: [{propertes: 1}], default: {}}", ""},
	}
	v := newTestValidator(t)
	for _, tc := range tests {
		t.Run(tc.schema, func(t *testing.T) {
			src := "apiVersion: pipectl/v1\nkind: Pipeline\nname: s\nsteps:\n  - {id: a, type: wait, schema: " + tc.schema + "}\n"
			_, diags := v.Parse("p.yaml", []byte(src))
			var errs []string
			for _, d := range diags {
				if d.Severity == SeverityError {
					errs = append(errs, d.String())
				}
			}
			got := strings.Join(errs, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Fatalf("want no error, got:\n%s", got)
			case tc.want != "" && (!strings.Contains(got, tc.want) || len(errs) != 1 || !strings.HasPrefix(got, "p.yaml:5:")):
				t.Fatalf("want one error on line 5 containing %q, got:\n%s", tc.want, got)
			}
		})
	}
}
