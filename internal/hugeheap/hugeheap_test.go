package hugeheap

import (
	"regexp"
	"strings"
	"testing"
)

func TestDisabledByGODEBUG(t *testing.T) {
	for _, tc := range []struct {
		godebug string
		want    bool
	}{
		{"", false},
		{"disablethp=1", true},
		{"madvdontneed=1,disablethp=1", true},
		{"disablethp=1,gctrace=1", true},
		{"disablethp=0", false},
		{"xdisablethp=1", false},
		{"disablethp=10", false},
	} {
		if got := disabledByGODEBUG(tc.godebug); got != tc.want {
			t.Errorf("disabledByGODEBUG(%q) = %v, want %v", tc.godebug, got, tc.want)
		}
	}
}

func TestSelectedMode(t *testing.T) {
	for _, tc := range []struct{ list, want string }{
		{"always [madvise] never\n", "madvise"},
		{"[always] madvise never\n", "always"},
		{"always madvise [never]\n", "never"},
		{"always madvise never\n", "unknown (always madvise never\n)"},
		{"[always", "unknown ([always)"},
		{"", "unknown ()"},
	} {
		if got := selectedMode(tc.list); got != tc.want {
			t.Errorf("selectedMode(%q) = %q, want %q", tc.list, got, tc.want)
		}
	}
}

// FuzzDisabledByGODEBUG holds the hand-written GODEBUG scan (the package avoids importing
// strings so that its init runs early) to the obvious reading of a comma-separated list.
func FuzzDisabledByGODEBUG(f *testing.F) {
	for _, seed := range []string{"", "disablethp=1", "a=1,disablethp=1", "disablethp=1,", ",,disablethp=1,,", "disablethp=0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, godebug string) {
		want := false
		for _, setting := range strings.Split(godebug, ",") {
			if setting == "disablethp=1" {
				want = true
			}
		}
		if got := disabledByGODEBUG(godebug); got != want {
			t.Errorf("disabledByGODEBUG(%q) = %v, want %v", godebug, got, want)
		}
	})
}

// FuzzSelectedMode holds the sysfs choice-list scan to a regular-expression reading.
func FuzzSelectedMode(f *testing.F) {
	for _, seed := range []string{"always [madvise] never\n", "[always]", "[", "]", "a]b[c]", ""} {
		f.Add(seed)
	}
	bracketed := regexp.MustCompile(`^[^\[]*\[([^\]]*)\]`)
	f.Fuzz(func(t *testing.T, list string) {
		want := "unknown (" + list + ")"
		if m := bracketed.FindStringSubmatch(list); m != nil {
			want = m[1]
		}
		if got := selectedMode(list); got != want {
			t.Errorf("selectedMode(%q) = %q, want %q", list, got, want)
		}
	})
}
