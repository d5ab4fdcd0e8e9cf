package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

// pipectlStdin runs the command line in-process with stdin.
func pipectlStdin(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// keysSpec has unknown keys holding a tab and a newline (attack: a key that breaks a line
// of the report or hides where it is).
const keysSpec = "apiVersion: pipectl/v1\nkind: Pipeline\nname: keys\nsteps:\n  - id: a\n    type: transform\n    output: 1\n    \"time\\tout\": 5s\n    \"a\\nb\": 1\n"

const warningSpec = "apiVersion: pipectl/v1\nkind: Pipeline\nname: warn\nsteps:\n  - id: ask\n    type: llm\n    model: m\n    prompt: hi\n    output:\n      schema:\n        type: object\n        properties:\n          note: {type: string, maxLength: 20}\n"

func TestValidateSARIFMatchesSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	c.AssertFormat = true
	f, err := os.Open("testdata/sarif/sarif-2.1.0-rtm.5.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.AddResource("sarif.json", f); err != nil {
		t.Fatal(err)
	}
	sarif, err := c.Compile("sarif.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken.yaml", invalidSpec)
	keys := writeFile(t, dir, "odd name, 100%.yaml", keysSpec)
	warn := writeFile(t, dir, "warn.yaml", warningSpec)
	tests := []struct {
		name    string
		stdin   string
		args    []string
		code    int
		results int
		// wantResult is a substring of the first result's JSON.
		wantResult string
	}{
		{"invalid and warning files", "", []string{broken, keys, warn}, 1, 5, `"startLine": 13`},
		{"unreadable path", "", []string{filepath.Join(dir, "missing.yaml"), warn}, 2, 1, `"level": "warning"`},
		{"valid", "", []string{"../../pipelines/ticket-triage.yaml"}, 0, 0, ""},
		{"stdin", invalidSpec, []string{"--stdin-filename", "pipelines/broken.yaml", "-"}, 1, 2, `"uri": "pipelines/broken.yaml"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := pipectlStdin(t, tc.stdin, append([]string{"validate", "--format", "sarif"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, out, errOut)
			}
			var doc any
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if err := sarif.Validate(doc); err != nil {
				t.Fatalf("not valid SARIF 2.1.0: %#v\n%s", err, out)
			}
			var log struct {
				Runs []struct {
					Results     []json.RawMessage
					Invocations []struct {
						ExecutionSuccessful        bool
						ToolExecutionNotifications []json.RawMessage
					}
				}
			}
			if err := json.Unmarshal([]byte(out), &log); err != nil {
				t.Fatal(err)
			}
			run := log.Runs[0]
			if len(run.Results) != tc.results {
				t.Fatalf("%d results, want %d\n%s", len(run.Results), tc.results, out)
			}
			if tc.wantResult != "" && !strings.Contains(string(run.Results[0]), tc.wantResult) {
				t.Fatalf("first result lacks %s:\n%s", tc.wantResult, run.Results[0])
			}
			if unreadable := tc.code == 2; run.Invocations[0].ExecutionSuccessful == unreadable || (len(run.Invocations[0].ToolExecutionNotifications) > 0) != unreadable {
				t.Fatalf("invocation does not match exit %d:\n%s", tc.code, out)
			}
		})
	}
}

func TestValidateGitHubAnnotations(t *testing.T) {
	dir := t.TempDir()
	broken := writeFile(t, dir, "broken.yaml", invalidSpec)
	keys := writeFile(t, dir, "keys.yaml", keysSpec)
	missing := filepath.Join(dir, "dir,with:odd%chars", "missing.yaml")
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"positions, end and title", []string{broken}, 1, []string{
			"::error file=" + broken + ",line=13,endLine=13,col=34,endColumn=63,title=pipectl%3A steps[1].url::steps[1].url: model-proposed value",
			"::error file=" + broken + ",line=14,endLine=14,col=5,endColumn=11,title=pipectl%3A steps[1].timout::steps[1].timout: unknown key \"timout\"; did you mean \"timeout\"?",
		}},
		{"key with a tab and a newline at its own line, escaped once", []string{keys}, 1, []string{
			"::error file=" + keys + ",line=8,endLine=8,col=5,endColumn=16,title=pipectl%3A steps[0][\"time\\tout\"]::steps[0][\"time\\tout\"]: unknown key \"time\\tout\"; did you mean \"timeout\"?",
			"::error file=" + keys + ",line=9,endLine=9,col=5,endColumn=11,title=pipectl%3A steps[0][\"a\\nb\"]::steps[0][\"a\\nb\"]: unknown key \"a\\nb\"",
		}},
		{"unreadable path keeps file=", []string{missing}, 2, []string{
			"::error file=" + strings.NewReplacer(",", "%2C", ":", "%3A", "%", "%25").Replace(missing) + ",title=pipectl%3A cannot read::" + strings.ReplaceAll(missing, "%", "%25") + ": no such file or directory",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := pipectl(t, append([]string{"validate", "--format", "github"}, tc.args...)...)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != tc.code || len(lines) != len(tc.want) {
				t.Fatalf("exit %d, want %d; %d lines, want %d:\n%s", code, tc.code, len(lines), len(tc.want), out)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], want)
				}
			}
		})
	}
}

// The JSON report's fields are a contract (docs/ci.md): every diagnostic carries every field,
// field included when empty.
func TestValidateJSONFieldsAlwaysPresent(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "empty.yaml", "")
	broken := writeFile(t, dir, "broken.yaml", invalidSpec)
	code, out, _ := pipectl(t, "validate", "--format", "json", empty, broken, filepath.Join(dir, "missing.yaml"))
	if code != 2 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var rep struct {
		Valid       *bool
		Summary     map[string]any
		Diagnostics []map[string]any
		Unreadable  []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Valid == nil || *rep.Valid || len(rep.Diagnostics) != 3 || len(rep.Unreadable) != 1 {
		t.Fatalf("report:\n%s", out)
	}
	for _, k := range []string{"files", "invalid", "errors", "warnings", "unreadable"} {
		if _, ok := rep.Summary[k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	for _, d := range rep.Diagnostics {
		for _, k := range []string{"file", "line", "column", "end_line", "end_column", "severity", "field", "message"} {
			if _, ok := d[k]; !ok {
				t.Errorf("diagnostic %v lacks %q", d, k)
			}
		}
	}
	if first := rep.Diagnostics[0]; first["field"] != "" || first["message"] != "file is empty" || first["end_column"] != 2.0 {
		t.Errorf("file-level diagnostic: %v", first)
	}
	if u := rep.Unreadable[0]; u["path"] != filepath.Join(dir, "missing.yaml") {
		t.Errorf("unreadable: %v", u)
	}
}

func TestValidateStdin(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "schemas"), "s.json", `{"type": "object"}`)
	withRef := "apiVersion: pipectl/v1\nkind: Pipeline\nname: r\ninputs: {$ref: ../schemas/s.json}\nsteps:\n  - {id: a, type: transform, output: 1}\n"
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		out   string
		err   string
	}{
		{"valid with $ref beside the named file", withRef, []string{"--stdin-filename", filepath.Join(dir, "pipelines", "p.yaml"), "-"}, 0, "", "1 file(s) checked: 0 invalid"},
		{"$ref resolved from the working directory without a name", withRef, []string{"-"}, 1, "<stdin>:4:16: inputs.$ref: schema ../schemas/s.json: no such file", ""},
		{"invalid, named", invalidSpec, []string{"--stdin-filename", "pipelines/b.yaml", "-"}, 1, "pipelines/b.yaml:14:5: steps[1].timout: unknown key", ""},
		{"empty input", "", []string{"-"}, 1, "<stdin>:1:1: file is empty", ""},
		{"too large", strings.Repeat("#", 4<<20+1), []string{"-"}, 1, "<stdin>:1:1: input is larger than 4194304 bytes", ""},
		{"- with other paths", "", []string{"-", "../../pipelines"}, 2, "", "cannot be combined"},
		{"--stdin-filename without -", "", []string{"--stdin-filename", "x.yaml", "../../pipelines"}, 2, "", "applies only to -"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := pipectlStdin(t, tc.stdin, append([]string{"validate"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
		})
	}
}
