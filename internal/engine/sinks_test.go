package engine

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
)

// fieldSchemas are the input schemas the property test draws from: some keep a value safe in
// some positions, some in none, some only look as if they did.
var fieldSchemas = []string{
	`{type: string}`,
	`{enum: [alpha, "-rf", "../x", "a b"]}`,
	`{const: fixed}`,
	`{type: boolean}`,
	`{type: integer}`,
	`{type: integer, minimum: 0}`,
	`{type: number}`,
	`{type: number, exclusiveMinimum: 0}`,
	`{type: string, format: uuid}`,
	`{type: string, format: date-time}`,
	`{type: string, format: ipv4}`,
	`{type: string, format: email}`,
	`{type: string, format: hostname}`,
	`{type: string, format: no-such-format}`,
	`{type: string, pattern: "^[a-z0-9][a-z0-9-]*$"}`,
	`{type: string, pattern: "^[a-z0-9-]+$"}`,
	`{type: string, pattern: "^[A-Za-z0-9_.-]+$"}`,
	`{type: string, pattern: "[a-z]+"}`,
	`{type: string, pattern: "^[^\\r\\n]*$"}`,
	`{type: string, pattern: "^[ -~]*$"}`,
	`{type: string, pattern: "^[a-z]+$|^-[a-z]+$"}`,
	`{type: [string, integer], pattern: "^[a-z]+$", minimum: 0}`,
	`{pattern: "^[a-z]+$"}`,
	`{type: string, pattern: "^[a-z]+$", format: email}`,
	`{anyOf: [{enum: [a, b]}, {type: string, pattern: "^[0-9]+$"}]}`,
	`{anyOf: [{enum: ["-rf", ""]}, {type: string, pattern: "^[a-z]+$"}]}`,
	`{type: [string, "null"], pattern: "^[a-z]+$"}`,
}

// sinkTemplates place a field in every kind of side-effect position.
var sinkTemplates = []func(f string) (string, string){
	func(f string) (string, string) { return "url", "http://127.0.0.1:1/items/${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "url", "http://127.0.0.1:1/items/v-${{ inputs." + f + " }}/x" },
	func(f string) (string, string) { return "url", "http://127.0.0.1:1/search?q=${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "url", "http://${{ inputs." + f + " }}/x" },
	func(f string) (string, string) { return "header", "${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "query", "${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "arg", "${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "arg", "--name=${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "env", "${{ inputs." + f + " }}" },
	func(f string) (string, string) { return "arg", "${{ string(inputs." + f + ") }}" },
	func(f string) (string, string) { return "arg", "${{ inputs." + f + ".lowerAscii() }}" },
}

// hostileRunes are what attackers put in values; random strings over them, and a list of
// classic payloads, are filtered through each schema to find what an attacker can really send.
var hostileRunes = []rune("aZ09-._/?#%\\&=+; \r\n\t\x00\x7f@:`$()'\"ä\u2028\u00a0Ｋ")

var hostilePayloads = []any{
	"-rf", "--output=/etc/passwd", "..", ".", "../admin", "a/../b", "a?admin=1", "a#x", "%2e%2e",
	"a\r\nX-Injected: 1", "a\nb", "a\x00b", "; rm -rf /", "$(id)", "`id`", "a b", "a&b=c",
	"http://evil.example/", "//evil.example", "@evil.example", "\u2028", "ｅｖｉｌ", "аdmin",
	"alpha", "-rf", "../x", "a b", "fixed", "123", "2024-01-01T00:00:00Z", "a@b.c", "a&touch${IFS}x#@x.com",
	"6fa459ea-ee8a-3ca4-894e-db77e160355e", strings.Repeat("a", 5000),
	int64(-1), int64(0), int64(42), float64(-1.5), math.Copysign(0, -1), float64(3.25), true, false, nil,
}

// TestStaticCheckImpliesRuntimeCheck is the property that ties the two halves of the gate
// invariant together: for random pipelines over the sources and sinks, whenever the validator
// accepts a pipeline, no value that passes the input schema (hostile ones included) is ever
// refused by the engine's run-time check; and the validator does refuse some of them, so the
// property is not met by accepting nothing.
func TestStaticCheckImpliesRuntimeCheck(t *testing.T) {
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{Renderer: dsl.NewEvaluator(v.Expressions())}
	rnd := rand.New(rand.NewPCG(7, 11))
	// Values reach the engine decoded from JSON, as inputs and model answers are.
	// 1e21 is an integer whose text has an exponent with a "+"; the others pass the schema
	// library's own format checks but not the ones the gate uses.
	texts := []string{"-0.0", "-0", "1e2", "-1e-3", "0.0", "1e21", "-1e21", `"1998-12-31T23:59:60Z"`, `"2026-01-01T00:00:00+01:00"`,
		`"-0.0.0.0"`, `"+1.+2.+3.+4"`, `"2026-11-30T+1:+2:+3Z"`, `"10.0.0.1"`}
	for _, v := range hostilePayloads {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(raw))
	}
	for range 1500 {
		var b strings.Builder
		for range rnd.IntN(10) {
			b.WriteRune(hostileRunes[rnd.IntN(len(hostileRunes))])
		}
		raw, _ := json.Marshal(b.String())
		texts = append(texts, string(raw))
	}
	var samples []any
	for _, text := range texts {
		v, err := domain.DecodeJSON([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		samples = append(samples, v)
	}
	valid, invalid, checked := 0, 0, 0
	for iter := range 300 {
		nFields := 1 + rnd.IntN(3)
		var props, urlParts, headers, query, args, env []string
		schemas := make([]string, nFields)
		for i := range nFields {
			f := fmt.Sprintf("f%d", i)
			schemas[i] = fieldSchemas[rnd.IntN(len(fieldSchemas))]
			props = append(props, fmt.Sprintf("    %s: %s", f, schemas[i]))
			kind, text := sinkTemplates[rnd.IntN(len(sinkTemplates))](f)
			switch kind {
			case "url":
				urlParts = append(urlParts, text)
			case "header":
				headers = append(headers, fmt.Sprintf("      X-%s: %q", f, text))
			case "query":
				query = append(query, fmt.Sprintf("      %s: %q", f, text))
			case "arg":
				args = append(args, fmt.Sprintf("%q", text))
			case "env":
				env = append(env, fmt.Sprintf("      V_%s: %q", f, text))
			}
		}
		url := "http://127.0.0.1:1/fixed"
		if len(urlParts) > 0 {
			url = urlParts[0]
		}
		spec := "apiVersion: pipectl/v1\nkind: Pipeline\nname: prop\ninputs:\n  type: object\n  properties:\n" + strings.Join(props, "\n") +
			"\nsteps:\n  - id: call\n    type: http\n    method: POST\n    url: " + fmt.Sprintf("%q", url) + "\n"
		if len(headers) > 0 {
			spec += "    headers:\n" + strings.Join(headers, "\n") + "\n"
		}
		if len(query) > 0 {
			spec += "    query:\n" + strings.Join(query, "\n") + "\n"
		}
		spec += "  - id: run\n    type: exec\n    command: [tool" + prefixComma(args) + "]\n"
		if len(env) > 0 {
			spec += "    env:\n" + strings.Join(env, "\n") + "\n"
		}
		p, diags := v.Parse(filepath.Join(t.TempDir(), fmt.Sprintf("p%d.yaml", iter)), []byte(spec))
		if p == nil {
			invalid++
			for _, d := range diags {
				if d.Severity == dsl.SeverityError && !strings.Contains(d.Message, "reaches") && !strings.Contains(d.Message, "does not make it safe") {
					t.Fatalf("unexpected diagnostic for\n%s\n%s", spec, d)
				}
			}
			continue
		}
		valid++
		inputSchema := p.Inputs.Compiled.(*jsonschema.Schema)
		// What an attacker can send in each field: the samples its schema lets through.
		passing := make([][]any, nFields)
		for i := range nFields {
			for _, s := range samples {
				if inputSchema.Validate(map[string]any{fmt.Sprintf("f%d", i): s}) == nil {
					passing[i] = append(passing[i], s)
				}
			}
		}
		for range 150 {
			input := map[string]any{}
			for i := range nFields {
				if len(passing[i]) > 0 {
					input[fmt.Sprintf("f%d", i)] = passing[i][rnd.IntN(len(passing[i]))]
				}
			}
			if inputSchema.Validate(input) != nil {
				t.Fatalf("combined input %#v fails the schema", input)
			}
			checked++
			vars := map[string]any{"inputs": input, "steps": map[string]any{}, "run": map[string]any{"id": "r", "idempotency_key": "k", "pipeline": "prop"}}
			for _, st := range p.Steps {
				if err := e.checkSinks(p, st, vars); err != nil {
					t.Fatalf("the validator accepted\n%s\nbut the run-time check refuses input %#v: %v", spec, input, err)
				}
			}
		}
	}
	t.Logf("%d valid and %d invalid pipelines, %d schema-passing inputs checked", valid, invalid, checked)
	if valid < 20 || invalid < 20 || checked < 2000 {
		t.Fatalf("the generator is too narrow: %d valid, %d invalid, %d inputs", valid, invalid, checked)
	}
}

func prefixComma(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return ", " + strings.Join(args, ", ")
}

// TestRuntimeCheckRefusesWhatTheSchemaOfThisSpecRefuses covers the other job of the run-time
// check: a value gated under an earlier spec (a resume, a replay) must still satisfy the
// schema of the spec the run executes now.
func TestRuntimeCheckRefusesWhatTheSchemaOfThisSpecRefuses(t *testing.T) {
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{Renderer: dsl.NewEvaluator(v.Expressions())}
	spec := `apiVersion: pipectl/v1
kind: Pipeline
name: narrow
steps:
  - id: pick
    type: llm
    model: m
    prompt: hi
    output: {schema: {type: object, properties: {mode: {enum: [fast, safe]}, id: {type: string, pattern: "^[a-z]+$"}}}}
  - id: act
    type: exec
    command: [tool, "${{ steps.pick.output.mode }}", "${{ steps.pick.output.id }}"]
`
	p, diags := v.Parse(filepath.Join(t.TempDir(), "p.yaml"), []byte(spec))
	if p == nil {
		t.Fatal(diags)
	}
	vars := func(out map[string]any) map[string]any {
		return map[string]any{"inputs": map[string]any{}, "steps": map[string]any{"pick": map[string]any{"output": out}}}
	}
	if err := e.checkSinks(p, p.Step("act"), vars(map[string]any{"mode": "fast", "id": "abc"})); err != nil {
		t.Fatalf("a value this spec admits was refused: %v", err)
	}
	for _, out := range []map[string]any{
		{"mode": "--delete-all", "id": "abc"},
		{"mode": "fast", "id": "-x"},
		{"mode": "fast", "id": "ABC"},
	} {
		err := e.checkSinks(p, p.Step("act"), vars(out))
		if err == nil || domain.ClassOf(err) != domain.ClassPermanent || !strings.Contains(err.Error(), "run-time gate check") {
			t.Fatalf("%v: got %v, want a permanent run-time gate refusal", out, err)
		}
	}
}

// TestRuntimeCheckPlacesAValueByTheTextOnItsWay: a transform's "?user=${{ x }}" puts x in the
// url's query string even though the url's placeholder stands in its path; the run-time check
// then refuses "&" and "=" there (as the validator does), so a weakened static check cannot
// let a value add a query parameter.
func TestRuntimeCheckPlacesAValueByTheTextOnItsWay(t *testing.T) {
	e := &Engine{}
	chk := domain.SinkCheck{Field: "url", Expr: "steps.t.output", Class: domain.SinkURLPath, Flows: []domain.SinkFlow{{
		Origin: domain.ValueRef{Path: []domain.PathSegment{{Field: "s"}}}, Source: "run input", Class: domain.SinkURLQuery,
	}}}
	vars := func(s string) map[string]any { return map[string]any{"inputs": map[string]any{"s": s}} }
	if err := e.checkSink(chk, vars("bob")); err != nil {
		t.Fatalf("a plain value was refused: %v", err)
	}
	if err := e.checkSink(chk, vars("bob&admin=1")); err == nil {
		t.Fatal("a value that adds a query parameter passed the run-time check")
	}
	chk.Flows[0].Class = ""
	if err := e.checkSink(chk, vars("bob&admin=1")); err != nil {
		t.Fatalf("in a path, & and = are data: %v", err)
	}
}
