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

// ajv runs .ci/ajv/check.mjs over YAML files with two validators that share no code with
// pipectl: ajv in strict mode under the schema's declared draft (YAML read by the yaml
// package's YAML 1.2 core schema), and yaml-language-server, the engine of the YAML editor
// extensions. It returns each file's errors by validator ("ajv", "editor"); "YAML: ..." when a
// file is not YAML at all. It skips the test, saying why, where node is missing or the
// validators cannot be installed.
func ajv(t *testing.T, schemaPath string, files []string) map[string]map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: the schema is not checked by ajv (install node and npm, then run .ci/ajv/install)")
	}
	if _, err := os.Stat("../.ci/ajv/node_modules/yaml-language-server"); err != nil {
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
		Editor  map[string][]string
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("check.mjs output: %v\n%s", err, out)
	}
	if rep.Schema != nil {
		t.Fatalf("%s fails ajv strict mode: %s", schemaPath, *rep.Schema)
	}
	byValidator := map[string]map[string][]string{"ajv": rep.Results, "editor": rep.Editor}
	for _, f := range files {
		for name, res := range byValidator {
			if _, ok := res[f]; !ok {
				t.Fatalf("check.mjs did not check %s with %s", f, name)
			}
		}
	}
	return byValidator
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
	"template-in-names":            "template syntax in map keys",
}

// The editor reads these YAML-level faults more leniently than pipectl (and than ajv's YAML
// reading): it is not asked to flag them.
var editorLenient = map[string]string{
	"yaml-unsupported-tag": "yaml-language-server reads a !!binary value as a string",
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
	byValidator := ajv(t, "pipeline.schema.json", append(valid, invalid...))
	for validator, errs := range byValidator {
		for _, f := range valid {
			if len(errs[f]) > 0 {
				t.Errorf("%s: %s is valid but the schema rejects it:\n  %s", validator, f, strings.Join(errs[f], "\n  "))
			}
		}
		for _, f := range invalid {
			name := strings.TrimSuffix(filepath.Base(f), ".yaml")
			_, beyond := beyondSchema[name]
			if _, lenient := editorLenient[name]; lenient && validator == "editor" {
				continue
			}
			switch {
			case !beyond && len(errs[f]) == 0:
				t.Errorf("%s: %s is structurally invalid but the schema accepts it", validator, f)
			case beyond && len(errs[f]) > 0:
				t.Errorf("%s: %s is listed as beyond the schema but the schema rejects it (take it off the list):\n  %s", validator, f, strings.Join(errs[f], "\n  "))
			}
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
	for validator, errs := range ajv(t, "pipeline-test.schema.json", files) {
		for _, f := range examples {
			if len(errs[f]) > 0 {
				t.Errorf("%s: %s is valid but the schema rejects it:\n  %s", validator, f, strings.Join(errs[f], "\n  "))
			}
		}
		for f, name := range byFile {
			if len(errs[f]) == 0 {
				t.Errorf("%s: %s: the schema accepts it", validator, name)
			}
		}
	}
}
