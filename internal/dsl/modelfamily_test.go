package dsl

import (
	"os"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/llm"
)

// TestModelFamilyWarnings checks the warnings about settings a model's family ignores or
// refuses, with the built-in table and with a provider's override, against a golden file.
// Warnings leave the file valid.
func TestModelFamilyWarnings(t *testing.T) {
	tests := []struct {
		name     string
		families ModelFamilies
	}{
		{"builtin", nil},
		// The gateway serves a reasoning model as corp-reasoner: with the override, its
		// temperature is refused and its reasoning_effort is fine, the reverse of the default.
		{"override", func(provider, model string) llm.Family {
			if provider == "gateway" {
				f, err := llm.NewFamilies(map[string]string{"corp-*": llm.FamilyReasoning})
				if err != nil {
					panic(err)
				}
				return f.Lookup(model)
			}
			return llm.DefaultFamilies().Lookup(model)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestValidator(t)
			v.SetModelFamilies(tc.families)
			path := "testdata/warnings/model-family.yaml"
			p, diags, err := v.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if p == nil || HasErrors(diags) {
				t.Fatalf("warnings must leave the file valid: %v", diags)
			}
			var b strings.Builder
			for _, d := range diags {
				if d.Severity != SeverityWarning {
					t.Errorf("not a warning: %v", d)
				}
				b.WriteString(d.String())
				b.WriteByte('\n')
			}
			golden := strings.TrimSuffix(path, ".yaml") + "." + tc.name + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestModelFamilyWarnings -update to create it)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("diagnostics differ\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}
