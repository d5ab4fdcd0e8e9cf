package dsl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzValidate feeds arbitrary bytes through the whole parser and validator: it must never
// panic or hang, and every diagnostic must point at a real position.
func FuzzValidate(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	examples, _ := filepath.Glob("../../pipelines/*.yaml")
	for _, path := range append(seeds, examples...) {
		if src, err := os.ReadFile(path); err == nil {
			f.Add(src)
		}
	}
	f.Add([]byte("apiVersion: pipectl/v1\nkind: Pipeline\nname: x\nsteps: [{id: a, type: transform, output: '${{ 1 }}'}]\n"))
	v := newTestValidator(f)
	f.Fuzz(func(t *testing.T, src []byte) {
		p, diags := v.Parse("testdata/fuzz.yaml", src)
		if p != nil && HasErrors(diags) {
			t.Fatal("a pipeline came back together with errors")
		}
		if p == nil && !HasErrors(diags) {
			t.Fatal("no pipeline and no error")
		}
		// YAML breaks lines at \n, \r and \r\n; counting both gives an upper bound.
		lines := strings.Count(string(src), "\n") + strings.Count(string(src), "\r") + 2
		for _, d := range diags {
			if d.Line < 1 || d.Column < 1 || d.Line > lines || d.Message == "" {
				t.Fatalf("diagnostic without a real position: %+v", d)
			}
		}
	})
}

// FuzzParseTemplate checks that every placeholder found is a well-formed slice of the input.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		"plain", "${{ a }}", "x ${{ a }} y ${{ b }}", `${{ {'a': "}}"} }}`, "${{ '''}}''' }}",
		"${{ r'\\' }}", "${{", "}}", "${{ } }}", "${{ \"unterminated }}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := ParseTemplate(s)
		if err != nil {
			te, ok := err.(*TemplateError)
			if !ok || te.Offset < 0 || te.Offset > len(s) {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		last := 0
		for _, ph := range tpl.Placeholders {
			if ph.Start < last || ph.ExprStart != ph.Start+3 || ph.End > len(s) || s[ph.Start:ph.ExprStart] != "${{" || s[ph.End-2:ph.End] != "}}" {
				t.Fatalf("malformed placeholder %+v in %q", ph, s)
			}
			if ph.Expr != s[ph.ExprStart:ph.End-2] || strings.TrimSpace(ph.Expr) == "" {
				t.Fatalf("expression %q does not match its offsets in %q", ph.Expr, s)
			}
			last = ph.End
		}
		if !strings.Contains(s[last:], "${{") == false {
			t.Fatalf("an opening ${{ after the last placeholder was not reported in %q", s)
		}
	})
}
