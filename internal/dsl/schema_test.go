package dsl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/schemas"
)

func rawPipelineSchema(t *testing.T) map[string]any {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(schemas.Pipeline, &raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSchemaStepTypesMatchDomain(t *testing.T) {
	raw := rawPipelineSchema(t)
	enum := valueAt(raw, "/$defs/step/properties/type/enum").([]any)
	var got, want []string
	for _, e := range enum {
		got = append(got, e.(string))
		if valueAt(raw, "/$defs/"+e.(string)) == nil {
			t.Errorf("step type %s has no $defs entry", e)
		}
	}
	for _, s := range domain.StepTypes {
		want = append(want, string(s))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("schema step types %v, domain %v", got, want)
	}
}

// schemaFieldNames lists every property name the pipeline schema declares.
func schemaFieldNames(v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if props, ok := x["properties"].(map[string]any); ok {
			for k := range props {
				out[k] = true
			}
		}
		for _, c := range x {
			schemaFieldNames(c, out)
		}
	case []any:
		for _, c := range x {
			schemaFieldNames(c, out)
		}
	}
}

// pipelineFieldNames lists the pipeline's own fields: $defs/schema, which describes JSON Schema
// itself for editors (its properties are schema keywords, not pipeline fields), is left out.
func pipelineFieldNames(t *testing.T, out map[string]bool) {
	raw := rawPipelineSchema(t)
	delete(raw["$defs"].(map[string]any), "schema")
	schemaFieldNames(raw, out)
}

// Every field of the schema is set in the kitchen-sink fixture, which must validate and decode
// with every domain field filled: a field added to the schema but not to the decoder (or the
// other way round) fails here.
func TestKitchenSinkCoversSchema(t *testing.T) {
	fields := map[string]bool{}
	pipelineFieldNames(t, fields)
	src, err := os.ReadFile("testdata/valid/kitchen-sink.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for f := range fields {
		if !regexp.MustCompile(`(?m)(^|[\s{,\-])` + regexp.QuoteMeta(f) + `:`).Match(src) {
			t.Errorf("kitchen-sink.yaml never sets %q", f)
		}
	}
	p, diags := newTestValidator(t).Parse("testdata/valid/kitchen-sink.yaml", src)
	if p == nil {
		t.Fatalf("kitchen sink invalid: %v", diags)
	}
	seen, filled := map[string]bool{}, map[string]bool{}
	checkFilled(reflect.ValueOf(p).Elem(), "Pipeline", seen, filled)
	for _, s := range p.Steps {
		checkFilled(reflect.ValueOf(s).Elem(), "Step", seen, filled)
	}
	var zero []string
	for f := range seen {
		if !filled[f] {
			zero = append(zero, f)
		}
	}
	sort.Strings(zero)
	if len(zero) > 0 {
		t.Fatalf("decoded fields never filled:\n%s", strings.Join(zero, "\n"))
	}
}

// checkFilled records every field of a struct and which of them hold a value, descending into
// set pointers.
func checkFilled(v reflect.Value, path string, seen, filled map[string]bool) {
	for i := range v.NumField() {
		f, name := v.Field(i), path+"."+v.Type().Field(i).Name
		switch {
		case name == "Pipeline.Steps" || strings.HasSuffix(name, ".Ref"):
			continue
		case name == "Pipeline.Triggers.Schedule.Every":
			continue // the other form of a schedule, exclusive with cron: testdata/valid/schedule-every.yaml
		case f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct:
			if !f.IsNil() {
				checkFilled(f.Elem(), name, seen, filled)
			}
		case f.Kind() == reflect.Struct:
			checkFilled(f, name, seen, filled)
		default:
			seen[name] = true
			if !f.IsZero() {
				filled[name] = true
			}
		}
	}
}

func TestSchemaFieldsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/spec.md")
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]bool{}
	pipelineFieldNames(t, fields)
	for f := range fields {
		if !bytes.Contains(doc, []byte("`"+f+"`")) {
			t.Errorf("docs/spec.md does not document `%s`", f)
		}
	}
}

func TestStrictModeWarning(t *testing.T) {
	p, diags, err := newTestValidator(t).ParseFile("testdata/strict-warning.yaml")
	if err != nil || p == nil || len(diags) != 1 {
		t.Fatalf("want a valid pipeline with one warning: %v %v", err, diags)
	}
	want := "testdata/strict-warning.yaml:11:9: warning: steps[0].output.schema: cannot be sent as strict structured output (/: needs additionalProperties: false; /: optional properties (note); strict mode needs every property in required (use a null type for optional values); /properties/note: keyword maxLength is not supported); the step will ask for JSON mode and the gate still enforces the schema on every answer"
	if got := diags[0].String(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// The binary compiles the pipeline schema under draft-07 rules (see loadPipelineSchema): it
// must use no keyword that draft-07 does not know or reads differently.
func TestPipelineSchemaIsDraft7Compatible(t *testing.T) {
	newer := map[string]bool{"unevaluatedProperties": true, "unevaluatedItems": true, "dependentRequired": true,
		"dependentSchemas": true, "prefixItems": true, "$dynamicRef": true, "$dynamicAnchor": true, "$recursiveRef": true,
		"minContains": true, "maxContains": true, "$anchor": true}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if newer[k] && !strings.HasSuffix(path, "/properties") {
					t.Errorf("%s uses %s, which draft-07 does not know", path, k)
				}
				if k == "items" {
					if _, isList := c.([]any); isList {
						t.Errorf("%s: items as a list means something else in 2020-12", path)
					}
				}
				walk(path+"/"+k, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s/%d", path, i), c)
			}
		}
	}
	walk("", rawPipelineSchema(t))
}
