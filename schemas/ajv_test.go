package schemas_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// ajv runs .ci/ajv/check.mjs (ajv in strict mode under the schema's declared draft, an
// independent validator that shares no code with pipectl) over YAML instances, and returns
// each instance's errors by name. It skips the test, saying why, where node is missing or ajv
// cannot be installed.
func ajv(t *testing.T, schemaPath string, instances map[string]any) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the schema is not checked by ajv (install node and npm, then run .ci/ajv/install)")
	}
	if _, err := os.Stat("../.ci/ajv/node_modules/ajv"); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			t.Skip("npm is not installed: cannot install ajv (.ci/ajv/install)")
		}
		if out, err := exec.Command("../.ci/ajv/install").CombinedOutput(); err != nil {
			t.Skipf("cannot install ajv with .ci/ajv/install (offline?): %v\n%s", err, out)
		}
	}
	dir := t.TempDir()
	args := []string{"../.ci/ajv/check.mjs", schemaPath}
	byFile := map[string]string{}
	for name, doc := range instances {
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		file := filepath.Join(dir, fmt.Sprintf("%d.json", len(byFile)))
		if err := os.WriteFile(file, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		byFile[file] = name
		args = append(args, file)
	}
	out, err := exec.Command("node", args...).Output()
	if err != nil {
		t.Fatalf("node check.mjs: %v\n%s", err, out)
	}
	var rep struct {
		Schema  *string
		Results map[string][]string
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("check.mjs output: %v\n%s", err, out)
	}
	if rep.Schema != nil {
		t.Fatalf("%s fails ajv strict mode: %s", schemaPath, *rep.Schema)
	}
	errs := map[string][]string{}
	for file, e := range rep.Results {
		errs[byFile[file]] = e
	}
	return errs
}

// readYAML decodes a YAML file into JSON-shaped values, as an editor's language server does.
func readYAML(t *testing.T, path string) (any, error) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		return nil, err
	}
	return jsonShaped(v), nil
}

func jsonShaped(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonShaped(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonShaped(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonShaped(e)
		}
		return x
	}
	return v
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	sort.Strings(files)
	return files
}

// Invalid fixtures whose fault is beyond any JSON Schema: expressions, the step graph, the
// gate invariant, secrets, referenced files, pipectl's own resource bounds. Every other fixture
// in internal/dsl/testdata/invalid is structural, and the schema alone must reject it.
//
// Fixtures named with these prefixes are whole families of such checks (new ones need no entry).
var beyondSchemaFamilies = map[string]string{
	"taint-":      "the gate invariant",
	"expr-":       "expressions",
	"needs-":      "the step graph",
	"ref-":        "the step graph",
	"secret-":     "secrets flow",
	"schema-ref-": "referenced files",
}

// The others are listed one by one, and must pass the schema, so that the list stays exact.
var beyondSchema = map[string]string{
	"deep-nesting":                 "pipectl's nesting bound",
	"duration-exceeds-run-timeout": "compares two fields",
	"exec-one-arg-with-spaces":     "argv semantics",
	"exec-sh-c":                    "argv semantics",
	"for-each-not-list":            "expression type",
	"http-duplicate-header":        "names compared without case",
	"idempotency-uses-steps":       "expression scope",
	"if-not-bool":                  "expression type",
	"retry-intervals":              "compares two fields",
	"rule-not-bool":                "expression type",
	"schema-inline-keyword-typo":   "unknown keywords are legal JSON Schema",
	"step-duplicate-id":            "uniqueness of a field across items",
	"yaml-multi-document":          "a YAML stream matter: the first document is a valid pipeline",
	"yaml-unsupported-tag":         "a YAML tag pipectl refuses; the value itself is fine",
}

func family(name string) bool {
	for prefix := range beyondSchemaFamilies {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

func TestPipelineSchemaUnderAjv(t *testing.T) {
	instances := map[string]any{}
	var valid, invalid []string
	for _, f := range append(glob(t, "../internal/dsl/testdata/valid/*.yaml"), glob(t, "../pipelines/*.yaml")...) {
		if strings.HasSuffix(f, ".test.yaml") {
			continue
		}
		v, err := readYAML(t, f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		instances[f] = v
		valid = append(valid, f)
	}
	for _, f := range glob(t, "../internal/dsl/testdata/invalid/*.yaml") {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if family(name) {
			continue
		}
		v, err := readYAML(t, f)
		if err != nil {
			// Refused as YAML, before any schema: an editor flags it just the same.
			if _, beyond := beyondSchema[name]; beyond {
				t.Errorf("%s is listed as beyond the schema but is not even YAML: %v", f, err)
			}
			continue
		}
		instances[f] = v
		invalid = append(invalid, f)
	}
	errs := ajv(t, "pipeline.schema.json", instances)
	for _, f := range valid {
		if len(errs[f]) > 0 {
			t.Errorf("%s is valid but the schema rejects it:\n  %s", f, strings.Join(errs[f], "\n  "))
		}
	}
	for _, f := range invalid {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		_, beyond := beyondSchema[name]
		switch {
		case !beyond && len(errs[f]) == 0:
			t.Errorf("%s is structurally invalid but the schema accepts it", f)
		case beyond && len(errs[f]) > 0:
			t.Errorf("%s is listed as beyond the schema but the schema rejects it (take it off the list):\n  %s", f, strings.Join(errs[f], "\n  "))
		}
	}
}

func TestPipelineTestSchemaUnderAjv(t *testing.T) {
	instances := map[string]any{}
	examples := glob(t, "../pipelines/*.test.yaml")
	for _, f := range examples {
		v, err := readYAML(t, f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		instances[f] = v
	}
	base := "kind: PipelineTest\ncases:\n  - name: c\n    input: {}\n"
	invalid := map[string]string{
		"unknown top-level key": "kind: PipelineTest\npipline: x.yaml\ncases:\n  - {name: c, expect: {state: succeeded}}\n",
		"wrong kind":            "kind: Pipeline\ncases:\n  - {name: c, expect: {state: succeeded}}\n",
		"no cases":              "kind: PipelineTest\ncases: []\n",
		"case without name":     "kind: PipelineTest\ncases:\n  - {expect: {state: succeeded}}\n",
		"expect without state":  base + "    expect: {error: boom}\n",
		"unknown state":         base + "    expect: {state: done}\n",
		"unknown verdict":       base + "    expect: {state: succeeded, verdicts: {a: [acepted]}}\n",
		"unknown answer key":    base + "    llm: {a: [{jsno: {}}]}\n    expect: {state: succeeded}\n",
		"fixture without url":   base + "    http: [{status: 200}]\n    expect: {state: succeeded}\n",
		"misspelt expect key":   base + "    expect: {state: succeeded, output: {}}\n",
	}
	for name, src := range invalid {
		var v any
		if err := yaml.Unmarshal([]byte(src), &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		instances[name] = jsonShaped(v)
	}
	errs := ajv(t, "pipeline-test.schema.json", instances)
	for _, f := range examples {
		if len(errs[f]) > 0 {
			t.Errorf("%s is valid but the schema rejects it:\n  %s", f, strings.Join(errs[f], "\n  "))
		}
	}
	for name := range invalid {
		if len(errs[name]) == 0 {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}
