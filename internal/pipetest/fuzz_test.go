package pipetest

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the test-file reader: errors, never panics.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("../../pipelines/*.test.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("kind: PipelineTest\ncases: [{name: a, expect: {state: succeeded}}]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "x.test.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Skip()
		}
		s, err := Load(path)
		if err == nil && (len(s.Cases) == 0 || s.Pipeline == "") {
			t.Fatalf("loaded a suite without cases or pipeline: %+v", s)
		}
	})
}

func TestCompareSubsets(t *testing.T) {
	want := Expect{State: "succeeded", Verdicts: map[string][]string{"a": {"accepted"}},
		Requests: map[string][]any{"w": {map[string]any{"body": map[string]any{"n": int64(2)}}}},
		Outputs:  map[string]any{"a": map[string]any{"team": "billing"}}}
	got := Observed{State: "succeeded", Verdicts: map[string][]string{"a": {"accepted"}},
		Requests: map[string][]any{"w": {map[string]any{"body": map[string]any{"n": 2.0, "extra": true}, "url": "u"}}},
		Outputs:  map[string]any{"a": map[string]any{"team": "billing", "priority": "high"}}}
	if d := Compare(want, got); len(d) != 0 {
		t.Fatalf("subset match reported differences: %v", d)
	}
	got.Outputs["a"] = map[string]any{"team": "sales"}
	got.Verdicts["a"] = []string{"rejected", "accepted"}
	d := Compare(want, got)
	if len(d) != 2 || d[0] != "verdicts.a: want [accepted], got [rejected accepted]" || d[1] != `outputs.a.team: want "billing", got "sales"` {
		t.Fatalf("diffs %q", d)
	}
}
