package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/schemas"
)

// pipectl runs the command line in-process and returns exit code, stdout and stderr.
func pipectl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

const invalidSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: broken
steps:
  - id: classify
    type: llm
    model: m
    prompt: hi
    output: {schema: {type: object, additionalProperties: false, required: [team], properties: {team: {type: string}}}}
  - id: call
    type: http
    method: POST
    url: https://example.com/${{ steps.classify.output.team }}
    timout: 5s
`

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateExamples(t *testing.T) {
	code, out, errOut := pipectl(t, "validate", "../../pipelines")
	if code != 0 || out != "" {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "4 file(s) checked: 0 invalid") {
		t.Fatalf("summary missing: %s", errOut)
	}
}

func TestValidateFormats(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "broken.yaml", invalidSpec)

	code, out, _ := pipectl(t, "validate", path)
	wantText := path + ":13:34: steps[1].url: model-proposed value steps.classify.output.team reaches the http url's path"
	if code != 1 || !strings.Contains(out, wantText) || !strings.Contains(out, path+":14:5: steps[1].timout: unknown key \"timout\"; did you mean \"timeout\"?") {
		t.Fatalf("text format: exit %d\n%s", code, out)
	}

	code, out, _ = pipectl(t, "validate", "--format", "github", path)
	if code != 1 || !strings.Contains(out, "::error file="+path+",line=13,endLine=13,col=34,endColumn=63,title=pipectl%3A steps[1].url::steps[1].url: model-proposed value") {
		t.Fatalf("github format: exit %d\n%s", code, out)
	}

	code, out, _ = pipectl(t, "validate", "--format", "json", path, "../../pipelines/ticket-triage.yaml")
	var rep struct {
		Valid       bool
		Summary     struct{ Files, Invalid, Errors int }
		Diagnostics []struct {
			File, Severity, Field, Message string
			Line, Column                   int
		}
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json format is not JSON: %v\n%s", err, out)
	}
	if code != 1 || rep.Valid || rep.Summary.Files != 2 || rep.Summary.Invalid != 1 || rep.Summary.Errors != 2 || len(rep.Diagnostics) != 2 {
		t.Fatalf("json format: exit %d %+v", code, rep)
	}
	if d := rep.Diagnostics[0]; d.Line != 13 || d.Column != 34 || d.Field != "steps[1].url" || d.Severity != "error" {
		t.Fatalf("first diagnostic: %+v", d)
	}
}

func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	valid := writeFile(t, dir, "ok.yaml", "apiVersion: pipectl/v1\nkind: Pipeline\nname: ok\nsteps:\n  - {id: a, type: transform, output: 1}\n")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"valid file", []string{"validate", valid}, 0, ""},
		{"missing path", []string{"validate", valid, filepath.Join(dir, "nope.yaml")}, 2, "no such file or directory"},
		{"no arguments", []string{"validate"}, 2, "requires at least 1 arg"},
		{"bad format", []string{"validate", "--format", "xml", valid}, 2, `unknown --format "xml"`},
		{"unknown flag", []string{"validate", "--strict", valid}, 2, "unknown flag: --strict"},
		{"empty folder", []string{"validate", t.TempDir()}, 2, "no pipeline files found"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := pipectl(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, errOut)
			}
		})
	}
}

func TestSchemaAndVersion(t *testing.T) {
	code, out, _ := pipectl(t, "schema")
	if code != 0 || out != string(schemas.Pipeline) || !json.Valid([]byte(out)) {
		t.Fatalf("schema: exit %d", code)
	}
	code, out, _ = pipectl(t, "schema", "test")
	if code != 0 || out != string(schemas.PipelineTest) || !json.Valid([]byte(out)) {
		t.Fatalf("schema test: exit %d", code)
	}
	if code, _, errOut := pipectl(t, "schema", "tests"); code != 2 || !strings.Contains(errOut, `unknown schema "tests"`) {
		t.Fatalf("schema tests: exit %d %s", code, errOut)
	}
	code, out, _ = pipectl(t, "version")
	if code != 0 || !strings.HasPrefix(out, "pipectl v") {
		t.Fatalf("version: exit %d %q", code, out)
	}
}

func TestBadInputNamesFileLineAndColumn(t *testing.T) {
	dir := t.TempDir()
	spec := writeFile(t, dir, "p.yaml", "apiVersion: pipectl/v1\nkind: Pipeline\nname: p\nsteps:\n  - {id: a, type: transform, output: 1}\n")
	bad := writeFile(t, dir, "in.json", "{\n  \"n\": 1,\n  \"x\": ,\n}\n")
	code, _, errOut := pipectl(t, "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "run", spec, "--input", bad)
	if code != 2 || !strings.Contains(errOut, bad+":3:9: input is not JSON") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, _, errOut = pipectl(t, "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "run", spec, "--input", `{"n": }`)
	if code != 2 || !strings.Contains(errOut, "--input:1:8: input is not JSON") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
