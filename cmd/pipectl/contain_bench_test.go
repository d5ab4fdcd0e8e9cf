package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// floodSize is what each refusal benchmark sends pipectl: the 200 MB.
const floodSize = 200 << 20

// BenchmarkProcessRefusesFloods measures the peak resident set of a `pipectl run` process
// (VmHWM, from the kernel's rusage of the finished child) while it refuses 200 MB arriving by
// each door: an --input file, a model answer from a real OpenAI-compatible server on loopback,
// an http response body, and an exec step's stdout. Every case must be refused (exit 2 for
// the input, a permanent failure for the rest); peak-RSS-MB is the figure docs/performance.md
// reports, to be compared with the 256 MB target.
func BenchmarkProcessRefusesFloods(b *testing.B) {
	dir := b.TempDir()
	big := filepath.Join(dir, "input.json")
	f, err := os.Create(big)
	if err != nil {
		b.Fatal(err)
	}
	f.WriteString(`{"pad": "`)
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for range floodSize >> 20 {
		f.Write(chunk)
	}
	f.WriteString(`"}`)
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	body := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range floodSize >> 20 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer body.Close()

	cases := []struct {
		name string
		spec string
		// input is the --input argument; model, when set, the number of bytes the model sends.
		input string
		model int64
		code  int
		exec  string
	}{
		{name: "input-file", spec: "steps:\n  - {id: t, type: transform, output: 1}\n", input: big, code: 2},
		{name: "model-answer", spec: `steps:
  - id: ask
    type: llm
    model: m
    prompt: hi
    output: {schema: {type: object}}
`, input: "{}", model: floodSize, code: 1},
		{name: "http-body", spec: "steps:\n  - {id: get, type: http, method: GET, url: \"" + body.URL + "\"}\n", input: "{}", code: 1},
		{name: "exec-stdout", spec: "steps:\n  - {id: x, type: exec, output: json, command: [./flood.sh]}\n", input: "{}", code: 1,
			exec: fmt.Sprintf("head -c %d /dev/zero", floodSize)},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var peak int64
			for b.Loop() {
				c := &cli{dir: b.TempDir()}
				c.spec, c.ledger = filepath.Join(c.dir, "p.yaml"), "sqlite:"+filepath.Join(c.dir, "ledger.db")
				spec := "apiVersion: pipectl/v1\nkind: Pipeline\nname: flood\ninputs: {type: object}\n" + tc.spec
				if err := os.WriteFile(c.spec, []byte(spec), 0o644); err != nil {
					b.Fatal(err)
				}
				if tc.exec != "" {
					os.WriteFile(filepath.Join(c.dir, "flood.sh"), []byte("#!/bin/sh\n"+tc.exec+"\n"), 0o755)
				}
				cmd := c.command("run", c.spec, "--input", tc.input)
				if tc.model > 0 {
					model := llmtest.New()
					model.Push(llmtest.Reply{Flood: tc.model})
					cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=k")
					defer model.Close()
				}
				out, err := cmd.CombinedOutput()
				if code := exitCodeOf(err); code != tc.code {
					b.Fatalf("exit %d, want %d\n%.2000s", code, tc.code, out)
				}
				if !strings.Contains(string(out), "larger than") && !strings.Contains(string(out), "over") {
					b.Fatalf("no refusal in the output:\n%.2000s", out)
				}
				peak = max(peak, peakRSS(cmd.ProcessState))
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
		})
	}
}
