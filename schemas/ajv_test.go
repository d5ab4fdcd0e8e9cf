package schemas_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// ajv runs .ci/ajv/check.mjs over YAML files: ajv in strict mode under the schema's declared
// draft, with YAML read by the yaml package's YAML 1.2 core schema as yaml-language-server
// reads it, an independent validator that shares no code with pipectl. It returns each file's
// errors ("YAML: ..." when it is not YAML a language server accepts). It skips the test, saying
// why, where node is missing or ajv cannot be installed.
func ajv(t *testing.T, schemaPath string, files []string) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the schema is not checked by ajv (install node and npm, then run .ci/ajv/install)")
	}
	if _, err := os.Stat("../.ci/ajv/node_modules/yaml"); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			t.Skip("npm is not installed: cannot install ajv (.ci/ajv/install)")
		}
		if out, err := exec.Command("../.ci/ajv/install").CombinedOutput(); err != nil {
			t.Skipf("cannot install ajv with .ci/ajv/install (offline?): %v\n%s", err, out)
		}
	}
	out, err := exec.Command("node", append([]string{"../.ci/ajv/check.mjs", schemaPath}, files...)...).Output()
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
	for _, f := range files {
		if _, ok := rep.Results[f]; !ok {
			t.Fatalf("check.mjs did not check %s", f)
		}
	}
	return rep.Results
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
	"schedule-cron-bad":            "cron syntax",
	"schedule-input-mismatch":      "compares two fields",
	"schedule-every-fraction":      "whole seconds of a duration",
	"schedule-timezone-unknown":    "the time zone database",
	"step-duplicate-id":            "uniqueness of a field across items",
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
	var valid, invalid []string
	for _, f := range append(glob(t, "../internal/dsl/testdata/valid/*.yaml"), glob(t, "../pipelines/*.yaml")...) {
		if !strings.HasSuffix(f, ".test.yaml") {
			valid = append(valid, f)
		}
	}
	for _, f := range glob(t, "../internal/dsl/testdata/invalid/*.yaml") {
		if !family(strings.TrimSuffix(filepath.Base(f), ".yaml")) {
			invalid = append(invalid, f)
		}
	}
	errs := ajv(t, "pipeline.schema.json", append(valid, invalid...))
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
	examples := glob(t, "../pipelines/*.test.yaml")
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
	dir := t.TempDir()
	files := append([]string{}, examples...)
	byFile := map[string]string{}
	for name, src := range invalid {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".test.yaml")
		if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		byFile[f] = name
	}
	errs := ajv(t, "pipeline-test.schema.json", files)
	for _, f := range examples {
		if len(errs[f]) > 0 {
			t.Errorf("%s is valid but the schema rejects it:\n  %s", f, strings.Join(errs[f], "\n  "))
		}
	}
	for f, name := range byFile {
		if len(errs[f]) == 0 {
			t.Errorf("%s: the schema accepts it", name)
		}
	}
}
