package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

func TestBackoffFullJitterWithinBounds(t *testing.T) {
	p := domain.RetryPolicy{MaxAttempts: 10, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2}
	rnd := rand.New(rand.NewPCG(1, 2))
	for failures, bound := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 50: time.Second} {
		var lo, hi time.Duration = time.Hour, 0
		for range 2000 {
			d := backoff(p, failures, 0, rnd)
			lo, hi = min(lo, d), max(hi, d)
			if d < 0 || d > bound {
				t.Fatalf("failures=%d: %s outside [0, %s]", failures, d, bound)
			}
		}
		// Full jitter spreads over the whole range, not just near the bound.
		if lo > bound/10 || hi < bound*9/10 {
			t.Fatalf("failures=%d: draws span only [%s, %s] of [0, %s]", failures, lo, hi, bound)
		}
	}
	if d := backoff(p, 1, 3*time.Second, rnd); d != 3*time.Second {
		t.Fatalf("Retry-After must win when longer: %s", d)
	}
	// Never within the millisecond of the failure, whatever the policy or the draw.
	zero := domain.RetryPolicy{MaxAttempts: 3, Multiplier: 2}
	for range 100 {
		if d := backoff(zero, 1, 0, rnd); d != time.Millisecond {
			t.Fatalf("a zero policy waits %s, want 1ms", d)
		}
		if d := backoff(p, 1, 0, rand.New(rand.NewPCG(0, 0))); d < time.Millisecond {
			t.Fatalf("a draw waits %s, under 1ms", d)
		}
	}
}

func TestRunIDsSortByTime(t *testing.T) {
	base := time.Now()
	var ids []string
	for i := range 100 {
		ids = append(ids, NewRunID(base.Add(time.Duration(i)*time.Millisecond)))
	}
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	for i := range ids {
		if ids[i] != sorted[i] || len(ids[i]) != 26 {
			t.Fatalf("ids do not sort by creation: %v", ids[:3])
		}
	}
	if NewRunID(base) == NewRunID(base) {
		t.Fatal("two ids in the same millisecond are equal")
	}
}

// stepKeyV1 is StepKey as first written: the keys already sent to targets must never change.
func stepKeyV1(pipeline, idempotencyKey, stepID string, item int) string {
	h := sha256.New()
	for _, part := range []string{"pipectl/step/v1", pipeline, idempotencyKey, stepID, strconv.Itoa(item)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func TestStepKeyKeepsItsDefinition(t *testing.T) {
	cases := []struct {
		pipeline, key, step string
		item                int
	}{
		{"p", "k", "s", -1},
		{"ticket-triage", "sha256:" + strings.Repeat("ab", 32), "label", 0},
		{"ticket-triage", "T-1#replay-01hx", "notify_each", 12345},
		{"p", strings.Repeat("long key ", 40), "s", 7}, // longer than the stack buffer
		{"", "", "", 0},
		{"p", "ключ", "s", -1},
	}
	for _, c := range cases {
		if got, want := StepKey(c.pipeline, c.key, c.step, c.item), stepKeyV1(c.pipeline, c.key, c.step, c.item); got != want {
			t.Errorf("StepKey(%q, %q, %q, %d) = %s, want %s", c.pipeline, c.key, c.step, c.item, got, want)
		}
	}
}

func TestStepKeyIsStable(t *testing.T) {
	a := StepKey("p", "k", "s", -1)
	if a != StepKey("p", "k", "s", -1) || a == StepKey("p", "k", "s", 0) || a == StepKey("p", "k2", "s", -1) || len(a) != 32 {
		t.Fatal("step keys must depend on run key, step and item only")
	}
}

func TestOwnerGone(t *testing.T) {
	self := CurrentOwner()
	if self.Start == "" {
		t.Skip("no /proc on this system")
	}
	parsed, ok := ParseOwner(self.String())
	if !ok || parsed != self || self.Gone(self) {
		t.Fatalf("self: %+v %v", parsed, ok)
	}
	dead := Owner{Host: self.Host, PID: os.Getpid(), Start: "1"}
	if !dead.Gone(self) {
		t.Fatal("a recycled pid with another start time must count as gone")
	}
	elsewhere := Owner{Host: "other-host", PID: 1, Start: "1"}
	if elsewhere.Gone(self) {
		t.Fatal("an owner on another host can only expire, never be known gone")
	}
}

// An excerpt in a refusal cuts the value at 60 bytes: a secret across the cut must be redacted
// whole first, or its first bytes stay in the error.
func TestExcerptRedactsBeforeTheCut(t *testing.T) {
	const secret = "exc-Secret-Pq83Zr61Wd"
	vars := map[string]any{"secrets": map[string]any{"S": secret}}
	got := excerpt(strings.Repeat("x", 50)+secret+"/tail", vars)
	for i := 0; i+8 <= len(secret); i++ {
		if strings.Contains(got, secret[i:i+8]) {
			t.Fatalf("excerpt %s keeps part of the secret", got)
		}
	}
}

// A run's folder is the pipeline file's, absolute, however often it is asked for and whatever
// the cache holds from runs before.
func TestWorkdirOfIsThePipelinesFolder(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{}
	for _, c := range []struct{ path, want string }{
		{"pipelines/a.yaml", filepath.Join(wd, "pipelines")},
		{"pipelines/a.yaml", filepath.Join(wd, "pipelines")},
		{"b.yaml", wd},
		{"other/../pipelines/c.yaml", filepath.Join(wd, "pipelines")},
		{"/srv/flows/d.yaml", "/srv/flows"},
		{"", "."},
	} {
		if got := e.workdirOf(&domain.Pipeline{Path: c.path}, RunOptions{}); got != c.want {
			t.Errorf("workdirOf(%q) = %q, want %q", c.path, got, c.want)
		}
	}
	if got := e.workdirOf(&domain.Pipeline{Path: "pipelines/a.yaml"}, RunOptions{Workdir: "/given"}); got != "/given" {
		t.Errorf("with a workdir given: %q", got)
	}
}
