package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// buildBinary compiles pipectl once per benchmark so that process start-up is measured too.
func buildBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "pipectl")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func copyExamples(b *testing.B, copies int) string {
	b.Helper()
	root := b.TempDir()
	for _, d := range []string{"pipelines", "schemas"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for _, s := range []string{"ticket.json", "triage.json"} {
		src, _ := os.ReadFile(filepath.Join("../../schemas", s))
		if err := os.WriteFile(filepath.Join(root, "schemas", s), src, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	spec, err := os.ReadFile("../../pipelines/ticket-triage.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for i := range copies {
		if err := os.WriteFile(filepath.Join(root, "pipelines", fmt.Sprintf("p%03d.yaml", i)), distinct(spec, i), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return filepath.Join(root, "pipelines")
}

// BenchmarkProcessValidateOne is `pipectl validate FILE` as CI runs it: one process per call,
// wall time including start-up.
func BenchmarkProcessValidateOne(b *testing.B) {
	bin := buildBinary(b)
	file := filepath.Join(copyExamples(b, 1), "p000.yaml")
	for b.Loop() {
		if out, err := exec.Command(bin, "validate", file).CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
}

// BenchmarkProcessValidateDir400 is `pipectl validate DIR` over 400 realistic files.
func BenchmarkProcessValidateDir400(b *testing.B) {
	bin := buildBinary(b)
	dir := copyExamples(b, 400)
	files := 0
	for b.Loop() {
		if out, err := exec.Command(bin, "validate", dir).CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		files += 400
	}
	b.ReportMetric(float64(files)/b.Elapsed().Seconds(), "files/s")
}

// placeholder matches one ${{ }} placeholder of the example (none of its expressions holds "}}").
var placeholder = regexp.MustCompile(`\$\{\{(.*?)\}\}`)

// distinct makes every expression of copy i unique ([expr, i][0] means the same to the
// validator), so that copies do not share compiled expressions the way identical files would.
func distinct(spec []byte, i int) []byte {
	return placeholder.ReplaceAll(spec, []byte(fmt.Sprintf("${{ [$1, %d][0] }}", i)))
}
