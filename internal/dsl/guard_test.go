package dsl

import (
	"runtime"
	"strings"
	"testing"
)

func guardVars() map[string]any {
	return map[string]any{
		"inputs": map[string]any{
			"s":     strings.Repeat("a", 1<<20),
			"small": "ab",
			"n":     int64(3),
			"b":     true,
			"items": []any{map[string]any{"name": "x"}, map[string]any{"name": "y"}},
		},
		"steps": map[string]any{},
		"run":   map[string]any{"id": "r", "idempotency_key": "k", "pipeline": "p"},
	}
}

// TestExpressionSizeGuard: expressions that would build huge values are refused before they
// allocate them, with a clear error, while ordinary ones keep working through the guarded
// calls.
func TestExpressionSizeGuard(t *testing.T) {
	x, err := NewExpressions()
	if err != nil {
		t.Fatal(err)
	}
	ev := NewEvaluator(x)
	for _, tc := range []struct {
		expr string
		want any    // the value, when it succeeds
		err  string // part of the error, when it fails
	}{
		// Attacks.
		{expr: `lists.range(100000).map(x, inputs.s).join('')`, err: "an expression may build at most"},
		{expr: `lists.range(100000).map(x, inputs.s)`, err: "an expression may build at most"},
		{expr: `[inputs.s].map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a).map(a, a + a)`, err: "an expression may build at most"},
		{expr: `inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s + inputs.s`, err: "an expression may build at most"},
		{expr: `inputs.s.replace('a', inputs.s)`, err: "replace would build"},
		{expr: `inputs.s.replace('', inputs.small + inputs.s)`, err: "replace would build"},
		{expr: `lists.range(20).map(i, inputs.s).join(inputs.s)`, err: "join would build"},
		{expr: `lists.range(20).map(i, inputs.s)`, want: nil},
		{expr: `[lists.range(12).map(i, inputs.s)].map(l, '%s%s%s'.format([l, l, l]))`, err: "format would build"},
		{expr: `[[inputs.s, inputs.s, inputs.s, inputs.s]].map(l, [l, l, l, l]).map(l, [l, l, l, l]).map(l, [l, l, l, l])`, err: "at most"},
		{expr: `base64.encode(bytes(inputs.s + inputs.s)) + base64.encode(bytes(inputs.s + inputs.s))`, want: nil},
		// Ordinary expressions through the guarded calls.
		{expr: `'a' + 'b'`, want: "ab"},
		{expr: `[1] + [2]`, want: []any{int64(1), int64(2)}},
		{expr: `inputs.n + 1`, want: int64(4)},
		{expr: `1.5 + 2.0`, want: 3.5},
		{expr: `string(timestamp('2020-01-01T00:00:00Z') + duration('1h'))`, want: "2020-01-01T01:00:00Z"},
		{expr: `inputs.items.map(i, i.name).join(',')`, want: "x,y"},
		{expr: `['a', 'b'].join()`, want: "ab"},
		{expr: `inputs.small.replace('a', 'zz')`, want: "zzb"},
		{expr: `inputs.small.replace('a', 'zz', 0)`, want: "ab"},
		{expr: `'%s-%d'.format([inputs.small, 2])`, want: "ab-2"},
		{expr: `strings.quote(inputs.small)`, want: `"ab"`},
		{expr: `lists.range(3)`, want: []any{int64(0), int64(1), int64(2)}},
		{expr: `size(lists.range(1000).map(x, x * 2))`, want: int64(1000)},
		{expr: `size(inputs.s + 'x')`, want: int64(1<<20 + 1)},
		{expr: `inputs.b + 1`, err: "no such overload"},
	} {
		t.Run(tc.expr[:min(len(tc.expr), 50)], func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := ev.Eval(tc.expr, guardVars())
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 4*MaxExprBytes {
				t.Errorf("allocated %d MB", grown>>20)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil && Text(got) != Text(tc.want) {
				t.Fatalf("got %v, want %v", Text(got), Text(tc.want))
			}
		})
	}
}

// FuzzEvalBounded: whatever the expression, evaluation neither panics nor yields more than
// the cap.
func FuzzEvalBounded(f *testing.F) {
	for _, s := range []string{
		`lists.range(1000).map(x, inputs.small).join('')`, `inputs.small + inputs.small`, `[1] + [2]`,
		`inputs.small.replace('', 'xyz')`, `'%s'.format([inputs.items])`, `inputs.b + 1`, `strings.quote(inputs.small)`,
		`base64.encode(b'abc')`, `inputs.items.map(i, [i, i]).map(l, [l, l])`, `lists.range(3).map(i, inputs.n + i)`,
	} {
		f.Add(s)
	}
	x, err := NewExpressions()
	if err != nil {
		f.Fatal(err)
	}
	ev := NewEvaluator(x)
	vars := guardVars()
	vars["inputs"].(map[string]any)["s"] = strings.Repeat("a", 4096)
	f.Fuzz(func(t *testing.T, expr string) {
		if len(expr) > 300 {
			return
		}
		if _, issues := x.Compile(expr); len(issues) > 0 {
			return
		}
		got, err := ev.Eval(expr, vars)
		if err == nil && len(Text(got)) > MaxExprBytes+MaxExprBytes/2 {
			t.Fatalf("%q yields %d bytes", expr, len(Text(got)))
		}
	})
}
