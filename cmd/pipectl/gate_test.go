package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// weakSpec lets run inputs, which no schema here constrains for these positions, reach an
// argv, a url path and a header. The real validator refuses it; a build whose static check
// is switched off (the pipectl_weaken_taint tag) accepts it, and then only the engine's
// run-time check stands between the values and the side effects.
const weakSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: weak
inputs:
  type: object
  properties:
    name: {type: string}
    page: {type: string}
    note: {type: string}
steps:
  - id: touch
    type: exec
    command: [./record.sh, "${{ inputs.name }}"]
  - id: fetch
    type: http
    method: POST
    url: http://target.invalid/items/${{ inputs.page }}
    headers:
      X-Note: ${{ inputs.note }}
`

// TestRuntimeGateStopsWhatAWeakenedValidatorLetsThrough builds pipectl with the static taint
// check switched off and shows that the run-time check alone refuses hostile values before
// any process starts or any request leaves, and lets harmless ones through.
func TestRuntimeGateStopsWhatAWeakenedValidatorLetsThrough(t *testing.T) {
	weak := filepath.Join(t.TempDir(), "pipectl-weak")
	if out, err := exec.Command("go", "build", "-tags", "pipectl_weaken_taint", "-o", weak, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	cases := []struct {
		name, input string
		ok          bool
		field       string
	}{
		{"harmless values pass", `{"name": "alice", "page": "p1", "note": "hello"}`, true, ""},
		{"an option smuggled into argv", `{"name": "--output=/etc/passwd", "page": "p1", "note": "x"}`, false, "steps[0].command[1]"},
		{"a path traversal in the url", `{"name": "bob", "page": "../admin", "note": "x"}`, false, "steps[1].url"},
		{"a query smuggled into the url path", `{"name": "bob", "page": "p?admin=1", "note": "x"}`, false, "steps[1].url"},
		{"CRLF in a header", "{\"name\": \"bob\", \"page\": \"p1\", \"note\": \"x\\r\\nX-Admin: 1\"}", false, "steps[1].headers.X-Note"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t, weakSpec)
			c.useTarget(srv.URL)
			marker := filepath.Join(c.dir, "ran")
			script := "#!/bin/sh\nprintf '%s' \"$1\" > " + marker + "\n"
			if err := os.WriteFile(filepath.Join(c.dir, "record.sh"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			// The release build refuses the spec outright.
			if code, out := c.exec(t, nil, "validate", c.spec); code != 1 || !strings.Contains(out, "run input inputs.name reaches exec argument 1") {
				t.Fatalf("release validate: exit %d\n%s", code, out)
			}
			before := requests.Load()
			cmd := exec.Command(weak, "--ledger", c.ledger, "run", c.spec, "--input", tc.input)
			cmd.Dir = c.dir
			out, err := cmd.CombinedOutput()
			code := exitCodeOf(err)
			doc := showRun(t, c)
			if tc.ok {
				if code != 0 || doc.Run.State != "succeeded" {
					t.Fatalf("exit %d state %s\n%s", code, doc.Run.State, out)
				}
				if got, _ := os.ReadFile(marker); string(got) != "alice" {
					t.Fatalf("the exec step wrote %q", got)
				}
				if requests.Load() != before+1 {
					t.Fatal("the http step sent no request")
				}
				return
			}
			if code != 1 || doc.Run.State != "failed_permanent" {
				t.Fatalf("exit %d state %s, want a dead-lettered run\n%s", code, doc.Run.State, out)
			}
			if !strings.Contains(doc.Run.Error, tc.field+": refused before the step ran (run-time gate check)") {
				t.Fatalf("error %q does not name %s and the run-time check", doc.Run.Error, tc.field)
			}
			if tc.field == "steps[0].command[1]" {
				if _, err := os.Stat(marker); err == nil {
					t.Fatal("the exec step ran with the hostile argument")
				}
			}
			if requests.Load() != before {
				t.Fatalf("%d requests left for a refused value", requests.Load()-before)
			}
			// The refusal is an attempt in the ledger, with its error.
			found := false
			for _, a := range doc.Attempts {
				found = found || a.Outcome == "failed"
			}
			if !found {
				t.Fatalf("no failed attempt recorded: %+v", doc.Attempts)
			}
		})
	}
}
