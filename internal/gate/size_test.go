package gate

import (
	"runtime"
	"strings"
	"testing"
)

// TestRuleSizeGuard: a rule that would build gigabytes out of a proposal (many items, each
// joined with a long field) fails as a rule, without allocating them.
func TestRuleSizeGuard(t *testing.T) {
	env, err := Env()
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(env, nil, []RuleSpec{
		{Expr: `output.items.map(i, output.summary).join('').size() < 10`, Message: "short"},
		{Expr: `size(output.items) > 0`, Message: "has items"},
	})
	if err != nil {
		t.Fatal(err)
	}
	items := make([]any, 100000)
	for i := range items {
		items[i] = "x"
	}
	proposal := map[string]any{"summary": strings.Repeat("s", 1<<20), "items": items}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v := g.Check(proposal, map[string]any{"inputs": map[string]any{}, "steps": map[string]any{}, "run": map[string]any{}})
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4*MaxExprBytes {
		t.Fatalf("allocated %d MB", grown>>20)
	}
	if v.Decision != Reject || len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0].Message, "may build at most") {
		t.Fatalf("verdict %+v", v)
	}
}
