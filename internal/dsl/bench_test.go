package dsl

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// benchTree lays out n copies of the ticket-triage example (60 lines, 13 expressions, two
// shared $ref schemas) the way a pipelines repository looks.
func benchTree(b *testing.B, n int) string {
	b.Helper()
	root := b.TempDir()
	for _, d := range []string{"pipelines", "schemas"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range []string{"ticket.json", "triage.json"} {
		src, err := os.ReadFile(filepath.Join("../../schemas", s))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "schemas", s), src, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	spec, err := os.ReadFile("../../pipelines/ticket-triage.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(root, "pipelines", fmt.Sprintf("p%03d.yaml", i)), distinct(spec, i), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return filepath.Join(root, "pipelines")
}

// BenchmarkValidateFile validates one realistic spec per iteration on one goroutine.
func BenchmarkValidateFile(b *testing.B) {
	dir := benchTree(b, 1)
	v := newTestValidator(b)
	path := filepath.Join(dir, "p000.yaml")
	b.ReportAllocs()
	for b.Loop() {
		if _, diags, err := v.ParseFile(path); err != nil || HasErrors(diags) {
			b.Fatal(err, diags)
		}
	}
}

// BenchmarkValidateDir400 is `pipectl validate DIR` without process start: discovery plus
// parallel validation of 400 files, reported as files/s.
func BenchmarkValidateDir400(b *testing.B) {
	dir := benchTree(b, 400)
	v := newTestValidator(b)
	b.ReportAllocs()
	files := 0
	for b.Loop() {
		found, errs := Discover([]string{dir})
		if len(errs) > 0 || len(found) != 400 {
			b.Fatal(errs, len(found))
		}
		for _, r := range v.ValidateFiles(found) {
			if r.Err != nil || HasErrors(r.Diagnostics) {
				b.Fatal(r.Err, r.Diagnostics)
			}
		}
		files += len(found)
	}
	b.ReportMetric(float64(files)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkNewValidator is the one-time cost every process pays before the first file: the
// CEL environment and the pipeline schema (compiled in the background, waited for here).
func BenchmarkNewValidator(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := newTestValidator(b).pipelineSchema(); err != nil {
			b.Fatal(err)
		}
	}
}

// placeholder matches one ${{ }} placeholder of the example (none of its expressions holds "}}").
var placeholder = regexp.MustCompile(`\$\{\{(.*?)\}\}`)

// distinct makes every expression of copy i unique (a trailing CEL comment changes the text the
// expression cache is keyed by, not the expression), so that copies do not share compiled
// expressions the way identical files would.
func distinct(spec []byte, i int) []byte {
	return placeholder.ReplaceAll(spec, []byte(fmt.Sprintf("${{$1// copy %d }}", i)))
}
