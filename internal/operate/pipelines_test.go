package operate

import "testing"

func TestNearest(t *testing.T) {
	known := []string{"support-triage", "billing-export", "slow", "nightly-report"}
	for _, tc := range []struct{ name, want string }{
		{"suport-triage", "support-triage"},
		{"Support-Triage", "support-triage"},
		{"billing-exprot", "billing-export"},
		{"slwo", "slow"},
		{"s", ""}, // three edits from slow: too far for a one-letter name
		{"weekly-report", ""},
		{"", ""},
	} {
		if got := Nearest(tc.name, known); got != tc.want {
			t.Errorf("Nearest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := Nearest("x", nil); got != "" {
		t.Errorf("no known names: %q", got)
	}
}

// FuzzNearest: the name of a kill switch comes from a person at 2 a.m. or from a script; no
// name may panic the suggestion, and the distance it rests on is a metric's basics: zero to
// itself, symmetric, at most the longer length.
func FuzzNearest(f *testing.F) {
	for _, s := range []string{"suport-triage", "", "ü", "\xff\xfe", "a-very-long-pipeline-name-that-goes-on"} {
		f.Add(s, "support-triage")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		d := editDistance(a, b)
		if d != editDistance(b, a) || editDistance(a, a) != 0 || d > max(len([]rune(a)), len([]rune(b))) {
			t.Fatalf("editDistance(%q, %q) = %d", a, b, d)
		}
		if got := Nearest(a, []string{b}); got != "" && got != b {
			t.Fatalf("Nearest(%q, [%q]) = %q", a, b, got)
		}
	})
}
