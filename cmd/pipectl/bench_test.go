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
// The environment entries are added to go build's (CGO_ENABLED=0 for a static binary).
func buildBinary(b *testing.B, env ...string) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "pipectl")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), env...)
	out, err := build.CombinedOutput()
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
// wall time including start-up. Cases: the default build (cgo on where a C compiler is
// installed, so the binary loads libc), the static CGO_ENABLED=0 build that docs/ci.md
// installs, the default build with the huge-page heap reservation turned off (what
// internal/hugeheap saves), and `pipectl version`, the floor of any command.
func BenchmarkProcessValidateOne(b *testing.B) {
	dynamic := buildBinary(b)
	static := buildBinary(b, "CGO_ENABLED=0")
	file := filepath.Join(copyExamples(b, 1), "p000.yaml")
	for _, bc := range []struct {
		name string
		bin  string
		args []string
		env  []string
	}{
		{"validate/build=default", dynamic, []string{"validate", file}, nil},
		{"validate/build=CGO_ENABLED=0", static, []string{"validate", file}, nil},
		{"validate/build=default/GODEBUG=disablethp=1", dynamic, []string{"validate", file}, []string{"GODEBUG=disablethp=1"}},
		{"version/build=default", dynamic, []string{"version"}, nil},
		{"version/build=CGO_ENABLED=0", static, []string{"version"}, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command(bc.bin, bc.args...)
				cmd.Env = append(os.Environ(), bc.env...)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
		})
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
