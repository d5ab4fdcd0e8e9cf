package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
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
// installs, and `pipectl version`, the floor of any command.
//
// Each iteration runs every case once, in turn, so that the host's changing load weighs on all
// of them alike; each case reports its median and mean in ms (ns/op is one round of all).
func BenchmarkProcessValidateOne(b *testing.B) {
	dynamic := buildBinary(b)
	static := buildBinary(b, "CGO_ENABLED=0")
	file := filepath.Join(copyExamples(b, 1), "p000.yaml")
	cases := []struct {
		name string
		bin  string
		args []string
		env  []string
	}{
		{"validate-default", dynamic, []string{"validate", file}, nil},
		{"validate-static", static, []string{"validate", file}, nil},
		{"version-default", dynamic, []string{"version"}, nil},
		{"version-static", static, []string{"version"}, nil},
	}
	times := make([][]time.Duration, len(cases))
	for b.Loop() {
		for i, c := range cases {
			// Output goes to /dev/null, not to a pipe this process would drain while the
			// child runs: on two cores, the reading goroutine's thread competes with the child.
			cmd := exec.Command(c.bin, c.args...)
			cmd.Env = append(os.Environ(), c.env...)
			start := time.Now()
			err := cmd.Run()
			times[i] = append(times[i], time.Since(start))
			if err != nil {
				// Run it again to show what it said.
				again := exec.Command(c.bin, c.args...)
				again.Env = cmd.Env
				out, _ := again.CombinedOutput()
				b.Fatalf("%s: %v\n%s", c.name, err, out)
			}
		}
	}
	for i, c := range cases {
		d := slices.Clone(times[i])
		slices.Sort(d)
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		b.ReportMetric(float64(d[len(d)/2])/1e6, "ms-median-"+c.name)
		b.ReportMetric(float64(sum)/float64(len(d))/1e6, "ms-mean-"+c.name)
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

// distinct makes every expression of copy i unique (a trailing CEL comment changes the text the
// expression cache is keyed by, not the expression), so that copies do not share compiled
// expressions the way identical files would.
func distinct(spec []byte, i int) []byte {
	return placeholder.ReplaceAll(spec, []byte(fmt.Sprintf("${{$1// copy %d }}", i)))
}
