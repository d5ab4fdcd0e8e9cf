package worker

import (
	"testing"
	"time"
)

// TestReserveFor: the reserve is the runs the slots finish during a claim's round trip,
// rounded to the nearest, between none and one per slot, whatever the interval measured.
func TestReserveFor(t *testing.T) {
	for _, tc := range []struct {
		name       string
		frees      int
		over, took time.Duration
		most, want int
		ttl        time.Duration // the lease; 0: five hours
	}{
		{"short runs: more than the slots finish during a claim", 400, 100 * time.Millisecond, 5 * time.Millisecond, 8, 8, 0},
		{"two runs finish during a claim", 40, 100 * time.Millisecond, 5 * time.Millisecond, 8, 2, 0},
		{"long runs: one in fifty claims", 2, 100 * time.Millisecond, time.Millisecond, 8, 0, 0},
		{"one run in two claims", 1, 2 * time.Millisecond, time.Millisecond, 8, 1, 0},
		{"nothing finished", 0, 100 * time.Millisecond, time.Millisecond, 8, 0, 0},
		// Two claims back at the same instant (a coarse clock): 1/0 is +Inf, 0/0 NaN, and
		// int(math.Ceil(+Inf or NaN)) is the most negative int on amd64.
		{"no time passed, runs finished", 1, 0, time.Millisecond, 8, 0, 0},
		{"no time passed, nothing finished", 0, 0, time.Millisecond, 8, 0, 0},
		{"claim took no time", 5, time.Millisecond, 0, 8, 0, 0},
		{"a long claim, longer lease", 1000, time.Nanosecond, time.Hour, 8, 8, 0},
		// A claim slower than a quarter of the lease: runs kept would be handed back unused.
		{"a claim of a quarter lease", 1000, time.Second, 15 * time.Second, 8, 0, time.Minute},
		{"a claim of just under a quarter lease", 1000, time.Second, 14 * time.Second, 8, 8, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ttl := tc.ttl
			if ttl == 0 {
				ttl = 5 * time.Hour
			}
			if got := reserveFor(tc.frees, tc.over, tc.took, ttl, tc.most); got != tc.want {
				t.Fatalf("reserveFor(%d, %s, %s, %s, %d) = %d, want %d", tc.frees, tc.over, tc.took, ttl, tc.most, got, tc.want)
			}
		})
	}
}
