package gate

import (
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"
)

const triageSchema = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["team", "priority", "confidence", "summary", "labels"],
  "properties": {
    "team": {"enum": ["billing", "technical", "account-management", "sales"]},
    "priority": {"enum": ["low", "normal", "high", "urgent"]},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "summary": {"type": "string", "pattern": "^[\\s\\S]{0,500}$"},
    "labels": {"type": "array", "maxItems": 5, "items": {"type": "string", "pattern": "^[a-z-]{1,30}$"}},
    "due": {"type": "string", "format": "date"}
  }
}`

func decode(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func triageGate(t testing.TB) *Gate {
	t.Helper()
	sch, err := CompileSchema("file:///tmp/triage.json", decode(t, triageSchema))
	if err != nil {
		t.Fatal(err)
	}
	env, err := Env()
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(env, sch, []RuleSpec{
		{Expr: `output.priority != "urgent" || output.confidence >= 0.7`, Message: "urgent needs confidence", OnFail: Review},
		{Expr: `inputs.tier == "enterprise" || output.team != "account-management"`, Message: "account management is for enterprise"},
		{Expr: `size(output.labels) == size(output.labels.distinct())`, Message: "labels must be unique"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGateVerdicts(t *testing.T) {
	g := triageGate(t)
	vars := map[string]any{"inputs": map[string]any{"tier": "pro"}}
	tests := []struct {
		name     string
		value    string
		decision string
		reasons  []string
	}{
		{"pass", `{"team": "billing", "priority": "high", "confidence": 0.9, "summary": "s", "labels": ["refund"]}`, Pass, nil},
		{"schema errors sorted by path", `{"team": "hr", "priority": "high", "confidence": 2, "summary": "s", "labels": ["Bad Label"], "x": 1}`, Reject,
			[]string{"/: additionalProperties 'x' not allowed (additionalProperties)", "/confidence: must be <= 1 but found 2 (maximum)", "/labels/0: does not match pattern '^[a-z-]{1,30}$' (pattern)", `/team: value must be one of "billing", "technical", "account-management", "sales" (enum)`}},
		{"format is asserted", `{"team": "billing", "priority": "low", "confidence": 0.5, "summary": "s", "labels": [], "due": "tomorrow"}`, Reject,
			[]string{"/due: 'tomorrow' is not valid 'date' (format)"}},
		{"review rule", `{"team": "technical", "priority": "urgent", "confidence": 0.5, "summary": "s", "labels": []}`, Review, []string{"/: urgent needs confidence (rule)"}},
		{"reject rule wins over review", `{"team": "account-management", "priority": "urgent", "confidence": 0.5, "summary": "s", "labels": ["a", "a"]}`, Reject,
			[]string{"/: urgent needs confidence (rule)", "/: account management is for enterprise (rule)", "/: labels must be unique (rule)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := g.Check(decode(t, tc.value), vars)
			var got []string
			for _, r := range v.Reasons {
				got = append(got, r.String())
			}
			if v.Decision != tc.decision || fmt.Sprint(got) != fmt.Sprint(tc.reasons) {
				t.Fatalf("decision %s reasons %q", v.Decision, got)
			}
		})
	}
}

func TestRemoteRefRefused(t *testing.T) {
	_, err := CompileSchema("file:///tmp/x.json", decode(t, `{"$ref": "https://example.com/s.json"}`))
	if err == nil {
		t.Fatal("a remote $ref was loaded")
	}
}

func TestCoerceNumbers(t *testing.T) {
	schema := decode(t, `{"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer"}, "c": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$defs": {"n": {"type": ["number", "null"]}}}`)
	v := Coerce(schema, map[string]any{"a": int64(3), "b": int64(4), "c": []any{int64(1), nil}})
	m := v.(map[string]any)
	if _, ok := m["a"].(float64); !ok {
		t.Fatal("number not coerced")
	}
	if _, ok := m["b"].(int64); !ok {
		t.Fatal("integer coerced")
	}
	if _, ok := m["c"].([]any)[0].(float64); !ok {
		t.Fatal("$ref items not coerced")
	}
}

// BenchmarkGateCheck measures one proposal through a realistic schema and three rules, with
// compiled schema and programs reused, and reports the p50 and p99 latency.
func BenchmarkGateCheck(b *testing.B) {
	g := triageGate(b)
	vars := map[string]any{"inputs": map[string]any{"tier": "pro"}}
	raw := `{"team": "billing", "priority": "high", "confidence": 0.9, "summary": "Customer was charged twice for the November invoice and asks for a refund.", "labels": ["refund", "invoice", "duplicate-charge"]}`
	var times []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		value := decode(b, raw)
		start := time.Now()
		if v := g.Check(value, vars); !v.Passed() {
			b.Fatal(v.Summary())
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1000, "p50-µs")
	b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds())/1000, "p99-µs")
}
