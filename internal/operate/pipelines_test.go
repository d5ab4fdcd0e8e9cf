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
