package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
)

// bulkSpec keys runs by a field of the input; bulkHashSpec has no key rule (the input's hash).
const bulkSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: tickets
inputs:
  type: object
  required: [id]
  additionalProperties: false
  properties:
    id: {type: string, pattern: "^[a-z0-9:-]{1,40}$"}
    priority: {enum: [low, high]}
    n: {type: integer}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: done, type: transform, output: "${{ inputs.id }}"}
`

const bulkHashSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: hashed
steps:
  - {id: done, type: transform, output: "${{ inputs }}"}
`

// ledgerDSNs are the ledgers every bulk test runs on: a SQLite file, and PostgreSQL (a schema
// of the test's own) when PIPECTL_TEST_POSTGRES is set.
func ledgerDSNs() map[string]func(t *testing.T, dir string) string {
	out := map[string]func(t *testing.T, dir string) string{
		"sqlite": func(t *testing.T, dir string) string { return "sqlite:" + filepath.Join(dir, "ledger.db") },
	}
	if os.Getenv("PIPECTL_TEST_POSTGRES") != "" {
		out["postgres"] = func(t *testing.T, _ string) string { return postgresDSN(t) }
	}
	return out
}

// pipectlIn runs the command line in this process, as main does.
func pipectlIn(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

type bulkSummary struct {
	Lines      int                     `json:"lines"`
	Created    int                     `json:"created"`
	Duplicates int                     `json:"duplicates"`
	ByState    map[domain.RunState]int `json:"duplicates_by_state"`
	Refused    int                     `json:"refused"`
	Refusals   []operate.LineRefusal   `json:"refusals"`
}

// refusal is what a test expects of a refused line: "LINE REASON [FIELD]".
func refusalsOf(rs []operate.LineRefusal) []string {
	out := []string{}
	for _, r := range rs {
		s := fmt.Sprintf("%d %s", r.Line, r.Reason)
		if r.Through != 0 {
			s = fmt.Sprintf("%d-%d %s", r.Line, r.Through, r.Reason)
		}
		if r.Field != "" {
			s += " " + r.Field
		}
		out = append(out, s)
	}
	return out
}

func TestSubmitInputs(t *testing.T) {
	huge := `{"id":"huge","pad":"` + strings.Repeat("x", 5000) + `"}`
	type step struct {
		// before runs first: a single submit, a disable.
		args  []string
		lines string
		stdin bool
		// want
		code                        int
		created, duplicates, refuse int
		refusals                    []string
		byState                     map[domain.RunState]int
	}
	cases := []struct {
		name   string
		spec   string
		before [][]string
		steps  []step
	}{
		{name: "mixed lines", spec: bulkSpec, steps: []step{{
			lines: `{"id":"a"}` + "\n" + `{"id":"b","priority":"high"}` + "\n\n" + `{"id":"a"}` + "\n" + `{"id":"a","n":1}` + "\n" +
				"not json\n[1,2]\n" + `{"id":"C"}` + "\n" + `{"id":"d","priority":"mid"}` + "\n" + `{"id":"e"}`,
			code: domain.ExitRefused, created: 3, duplicates: 1, refuse: 5,
			refusals: []string{"5 conflict", "6 not_json", "7 not_object", "8 schema /id", "9 schema /priority"},
			byState:  map[domain.RunState]int{domain.StateQueued: 1},
		}}},
		{name: "invalid lines only exit 1", spec: bulkSpec, steps: []step{{
			lines: `{"id":"a"}` + "\n" + `"a string"` + "\n" + `{"id":"b","extra":true}` + "\n" + `{"id":"c"}` + "\n",
			code:  domain.ExitFailed, created: 2, refuse: 2, refusals: []string{"2 not_object", "3 schema /"},
		}}},
		{name: "duplicate keys inside one batch", spec: bulkSpec, steps: []step{{
			lines: strings.Repeat(`{"id":"same"}`+"\n", 7) + `{"id":"other"}` + "\n" + `{"id":"same","n":2}` + "\n",
			code:  domain.ExitRefused, created: 2, duplicates: 6, refuse: 1, refusals: []string{"9 conflict"},
			byState: map[domain.RunState]int{domain.StateQueued: 6},
		}}},
		{name: "duplicate keys across batches", spec: bulkSpec, steps: []step{{
			args:  []string{"--batch-size", "2"},
			lines: `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + `{"id":"a"}` + "\n" + `{"id":"c"}` + "\n" + `{"id":"b"}` + "\n" + `{"id":"b","n":1}` + "\n",
			code:  domain.ExitRefused, created: 3, duplicates: 2, refuse: 1, refusals: []string{"6 conflict"},
		}}},
		{name: "many batches in flight, accounted in file order", spec: bulkSpec, steps: []step{{
			args: []string{"--batch-size", "1"},
			lines: `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + `[]` + "\n" + `{"id":"c"}` + "\n" + `{"id":"a","n":1}` + "\n" +
				`{"id":"d"}` + "\n" + `"x"` + "\n" + `{"id":"b"}` + "\n" + `{"id":"e"}` + "\n" + `{"id":"c","n":3}` + "\n",
			code: domain.ExitRefused, created: 5, duplicates: 1, refuse: 4,
			refusals: []string{"3 not_object", "5 conflict", "7 not_object", "10 conflict"},
		}}},
		{name: "rerunning the file creates nothing", spec: bulkSpec, steps: []step{
			{lines: `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + `{"id":"c"}` + "\n", created: 3},
			{lines: `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n" + `{"id":"c"}` + "\n", duplicates: 3, byState: map[domain.RunState]int{domain.StateQueued: 3}},
		}},
		{name: "stdin", spec: bulkSpec, steps: []step{
			{stdin: true, lines: `{"id":"a"}` + "\n" + `{"id":"b"}`, created: 2},
			{stdin: true, lines: `{"id":"a"}` + "\n" + `oops`, code: domain.ExitFailed, duplicates: 1, refuse: 1, refusals: []string{"2 not_json"}},
		}},
		{name: "a huge line is refused, not read whole", spec: bulkSpec, steps: []step{{
			args:  []string{"--max-input-bytes", "1000"},
			lines: `{"id":"a"}` + "\n" + huge + "\n" + `{"id":"b"}` + "\n",
			code:  domain.ExitFailed, created: 2, refuse: 1, refusals: []string{"2 too_large"},
		}}},
		{name: "a key reserved for schedule slots is refused", spec: bulkSpec, steps: []step{{
			lines: `{"id":"schedule:2026"}` + "\n" + `{"id":"ok"}` + "\n",
			code:  domain.ExitFailed, created: 1, refuse: 1, refusals: []string{"1 key"},
		}}},
		{name: "the key of a single submit", spec: bulkSpec, before: [][]string{{"submit", "SPEC", "--input", `{"id":"x","priority":"low"}`}}, steps: []step{{
			lines: `{"priority":"low","id":"x"}` + "\n" + `{"id":"x"}` + "\n",
			code:  domain.ExitRefused, duplicates: 1, refuse: 1, refusals: []string{"2 conflict"},
		}}},
		{name: "the input hash of a single submit", spec: bulkHashSpec, before: [][]string{{"submit", "SPEC", "--input", `{"b":[1,2.5],"a":"x"}`}}, steps: []step{{
			lines:      `{"a":"x","b":[1,2.5]}` + "\n" + `{"a":"x","b":[1,2.50]}` + "\n" + `{"a":"y"}` + "\n",
			duplicates: 2, created: 1,
		}}},
		{name: "the kill switch refuses all", spec: bulkSpec, before: [][]string{{"disable", "tickets", "--reason", "incident", "--pipelines", "DIR"}}, steps: []step{{
			lines: `{"id":"a"}` + "\n" + `{"id":"b"}` + "\n", code: domain.ExitRefused,
		}}},
	}
	for backend, dsnFor := range ledgerDSNs() {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					dir := t.TempDir()
					dsn := dsnFor(t, dir)
					spec := filepath.Join(dir, "pipeline.yaml")
					if err := os.WriteFile(spec, []byte(tc.spec), 0o644); err != nil {
						t.Fatal(err)
					}
					for _, b := range tc.before {
						args := append([]string{"--ledger", dsn}, b...)
						for i, a := range args {
							switch a {
							case "SPEC":
								args[i] = spec
							case "DIR":
								args[i] = dir
							}
						}
						if code, out, errOut := pipectlIn(t, "", args...); code != 0 {
							t.Fatalf("%v: exit %d\n%s%s", b, code, out, errOut)
						}
					}
					total := 0
					for i, s := range tc.steps {
						args := append([]string{"--ledger", dsn, "submit", spec, "--format", "json"}, s.args...)
						stdin := ""
						if s.stdin {
							args, stdin = append(args, "--inputs", "-"), s.lines
						} else {
							path := filepath.Join(dir, fmt.Sprintf("inputs-%d.jsonl", i))
							if err := os.WriteFile(path, []byte(s.lines), 0o644); err != nil {
								t.Fatal(err)
							}
							args = append(args, "--inputs", path)
						}
						code, out, errOut := pipectlIn(t, stdin, args...)
						if code != s.code {
							t.Fatalf("step %d: exit %d, want %d\n%s%s", i, code, s.code, out, errOut)
						}
						total += s.created
						if tc.name == "the kill switch refuses all" {
							if !strings.Contains(errOut, "disabled (incident") || strings.TrimSpace(out) != "" {
								t.Fatalf("kill switch: stdout %q stderr %q", out, errOut)
							}
							continue
						}
						var sum bulkSummary
						if err := json.Unmarshal([]byte(out), &sum); err != nil {
							t.Fatalf("step %d: %v\n%s", i, err, out)
						}
						if sum.Created != s.created || sum.Duplicates != s.duplicates || sum.Refused != s.refuse {
							t.Errorf("step %d: created %d, duplicates %d, refused %d; want %d, %d, %d\n%s", i, sum.Created, sum.Duplicates, sum.Refused, s.created, s.duplicates, s.refuse, out)
						}
						if want := s.refusals; want == nil {
							if len(sum.Refusals) != 0 {
								t.Errorf("step %d: refusals %v", i, refusalsOf(sum.Refusals))
							}
						} else if got := refusalsOf(sum.Refusals); !reflect.DeepEqual(got, want) {
							t.Errorf("step %d: refusals %v, want %v", i, got, want)
						}
						if s.byState != nil && !reflect.DeepEqual(sum.ByState, s.byState) {
							t.Errorf("step %d: duplicates by state %v, want %v", i, sum.ByState, s.byState)
						}
						// Every refusal is also a file:line diagnostic on stderr.
						for _, r := range sum.Refusals {
							if !strings.Contains(errOut, fmt.Sprintf(":%d: refused (%s)", r.Line, r.Reason)) {
								t.Errorf("step %d: stderr lacks line %d:\n%s", i, r.Line, errOut)
							}
						}
					}
					// The ledger holds exactly the runs created, and the ones submitted before.
					store, err := ledger.Open(context.Background(), dsn)
					if err != nil {
						t.Fatal(err)
					}
					defer store.Close()
					runs, err := store.ListRuns(context.Background(), ledger.RunFilter{Limit: 1000})
					if err != nil {
						t.Fatal(err)
					}
					before := 0
					for _, b := range tc.before {
						if b[0] == "submit" {
							before++
						}
					}
					if len(runs) != total+before {
						t.Fatalf("%d runs in the ledger, want %d", len(runs), total+before)
					}
					for _, r := range runs {
						if r.State != domain.StateQueued {
							t.Errorf("run %s is %s", r.ID, r.State)
						}
					}
				})
			}
		})
	}
}

// TestSubmitInputsText checks the text summary and the diagnostics of a file with refusals.
func TestSubmitInputsText(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "pipeline.yaml")
	os.WriteFile(spec, []byte(bulkSpec), 0o644)
	in := filepath.Join(dir, "in.jsonl")
	os.WriteFile(in, []byte(`{"id":"a"}`+"\n"+`{"id":"a"}`+"\n"+`{"id":"B"}`+"\n"+`{"id":"C"}`+"\n"+`{"id":"d"}`+"\n"+`[]`+"\n"), 0o644)
	code, out, errOut := pipectlIn(t, "", "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "submit", spec, "--inputs", in)
	if code != domain.ExitFailed {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	want := in + ": 2 created, 1 duplicate (1 queued), 3 refused\n  refused lines: 3-4, 6 (the reasons are on stderr)\n"
	if out != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", out, want)
	}
	for _, w := range []string{in + ":3: refused (schema): input does not match tickets's inputs schema: /id:", in + ":6: refused (not_object): the line is an array", "3 of 6 lines of " + in + " were refused"} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	// One run in JSON: the run as runs show --format json has it, and whether it was there.
	for _, dup := range []bool{false, true} {
		code, out, errOut := pipectlIn(t, "", "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "submit", spec, "--input", `{"id":"single"}`, "--format", "json")
		var doc struct {
			Duplicate bool `json:"duplicate"`
			Run       struct {
				ID    string `json:"id"`
				State string `json:"state"`
				Key   string `json:"idempotency_key"`
			} `json:"run"`
		}
		if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.Duplicate != dup || doc.Run.ID == "" || doc.Run.State != "queued" || doc.Run.Key != "single" {
			t.Fatalf("submit --format json: exit %d %v %+v\n%s%s", code, err, doc, out, errOut)
		}
	}
	// --input and --inputs exclude each other.
	if code, _, errOut := pipectlIn(t, "", "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "submit", spec, "--inputs", in, "--input", "{}"); code != domain.ExitUsage {
		t.Fatalf("both flags: exit %d %s", code, errOut)
	}
	if code, _, errOut := pipectlIn(t, "", "--ledger", "sqlite:"+filepath.Join(dir, "l.db"), "submit", spec, "--inputs", filepath.Join(dir, "missing.jsonl")); code != domain.ExitUsage {
		t.Fatalf("missing file: exit %d %s", code, errOut)
	}
}

// TestSubmitInputsThenWorker queues runs with the real binary from a file and has a real
// `pipectl worker` process execute them to the end.
func TestSubmitInputsThenWorker(t *testing.T) {
	for backend, dsnFor := range ledgerDSNs() {
		t.Run(backend, func(t *testing.T) {
			target := newApplyTarget(t)
			c := newCLI(t, workerSpec)
			c.useTarget(target.URL)
			c.ledger = dsnFor(t, c.dir)
			var lines strings.Builder
			const n = 25
			for i := range n {
				fmt.Fprintf(&lines, `{"id": "bulk-%02d", "url": %q}`+"\n", i, target.URL)
			}
			cmd := c.command("submit", c.spec, "--inputs", "-", "--no-preflight")
			cmd.Stdin = strings.NewReader(lines.String())
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d created, 0 duplicates, 0 refused", n)) {
				t.Fatalf("submit --inputs: %v\n%s", err, out)
			}
			w := startWorker(t, c.dir, c.ledger)
			store, err := ledger.Open(context.Background(), c.ledger)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			counts := waitForStates(t, store, n, time.Minute, nil)
			w.cmd.Process.Signal(syscall.SIGTERM)
			w.cmd.Wait()
			if counts[domain.StateSucceeded] != n {
				t.Fatalf("states %v, want %d succeeded\n%s", counts, n, w.log)
			}
			if applied, _ := target.snapshot(); len(applied) != 2*n {
				t.Fatalf("%d step keys applied at the target, want %d", len(applied), 2*n)
			}
			// Each bulk run has the history of a run submitted alone.
			runs, err := store.ListRuns(context.Background(), ledger.RunFilter{Limit: 1})
			if err != nil || len(runs) != 1 {
				t.Fatal(err)
			}
			ev, err := store.Events(context.Background(), runs[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(ev) < 3 || ev[0].To != domain.StateQueued || ev[0].Reason != "created" || ev[len(ev)-1].To != domain.StateSucceeded {
				t.Fatalf("events of %s: %+v", runs[0].ID, ev)
			}
		})
	}
}

// TestSubmitInputsOrderUnderParallelWrites holds back the first batch on PostgreSQL (an
// uncommitted run with one of its keys makes its insert wait) while the second batch, which
// shares a key with it, could be written on another connection: the second must wait, so that
// the line that conflicts is the later one, as writing in file order makes it.
func TestSubmitInputsOrderUnderParallelWrites(t *testing.T) {
	dsn := postgresDSN(t)
	dir := t.TempDir()
	spec := filepath.Join(dir, "pipeline.yaml")
	os.WriteFile(spec, []byte(bulkSpec), 0o644)
	in := filepath.Join(dir, "in.jsonl")
	os.WriteFile(in, []byte(`{"id":"x"}`+"\n"+`{"id":"a"}`+"\n"+`{"id":"a","n":1}`+"\n"), 0o644)
	// The ledger's schema exists once a command has opened it.
	if code, out, errOut := pipectlIn(t, "", "--ledger", dsn, "runs", "list"); code != 0 {
		t.Fatalf("runs list: %d %s%s", code, out, errOut)
	}
	store, err := ledger.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tx, err := store.DB().Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO runs (id, pipeline, idempotency_key, input_hash, input, spec_text, spec_hash, pipectl_version, state, created_at, updated_at)
		VALUES ('blocker', 'tickets', 'x', 'h', '{}', '', '', 'test', 'queued', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut := pipectlIn(t, "", "--ledger", dsn, "submit", spec, "--inputs", in, "--batch-size", "2", "--format", "json")
		done <- result{code, out, errOut}
	}()
	// Long enough for the second batch to be written if nothing held it back; the outcome
	// does not depend on it.
	time.Sleep(500 * time.Millisecond)
	tx.Rollback()
	r := <-done
	var sum bulkSummary
	if err := json.Unmarshal([]byte(r.out), &sum); err != nil {
		t.Fatalf("exit %d: %v\n%s%s", r.code, err, r.out, r.err)
	}
	if got := refusalsOf(sum.Refusals); sum.Created != 2 || !reflect.DeepEqual(got, []string{"3 conflict"}) {
		t.Fatalf("created %d, refusals %v; want 2 created and line 3 the conflict\n%s", sum.Created, got, r.err)
	}
}
