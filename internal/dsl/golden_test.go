package dsl

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files from the current output")

func newTestValidator(t testing.TB) *Validator {
	t.Helper()
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInvalidGolden runs every testdata/invalid case and compares the full diagnostic text,
// with file, line and column, against its .golden file.
func TestInvalidGolden(t *testing.T) {
	v := newTestValidator(t)
	cases, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 35 {
		t.Fatalf("only %d invalid cases", len(cases))
	}
	for _, path := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			t.Parallel()
			p, diags, err := v.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if p != nil || !HasErrors(diags) {
				t.Fatalf("expected the case to be invalid, got %v", diags)
			}
			var b strings.Builder
			for _, d := range diags {
				b.WriteString(d.String())
				b.WriteByte('\n')
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestInvalidGolden -update to create it)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("diagnostics differ\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

// TestValidCases checks that the valid fixtures and the shipped example pipelines pass with no
// diagnostics at all.
func TestValidCases(t *testing.T) {
	v := newTestValidator(t)
	fixtures, _ := filepath.Glob("testdata/valid/*.yaml")
	examples, _ := filepath.Glob("../../pipelines/*.yaml")
	var all []string
	for _, e := range append(fixtures, examples...) {
		if !strings.HasSuffix(e, ".test.yaml") {
			all = append(all, e)
		}
	}
	if len(examples) < 3 || len(fixtures) < 2 {
		t.Fatalf("missing fixtures: %d examples, %d valid cases", len(examples), len(fixtures))
	}
	for _, path := range all {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p, diags, err := v.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Fixtures may draw warnings (strict structured output); examples must be spotless.
			examples := strings.HasPrefix(path, "../../pipelines/")
			if p == nil || HasErrors(diags) || (examples && len(diags) > 0) {
				t.Fatalf("expected no diagnostics, got:\n%v", diags)
			}
		})
	}
}
