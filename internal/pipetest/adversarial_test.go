package pipetest

import (
	"strings"
	"testing"
)

func TestStructureDiff(t *testing.T) {
	base := map[string][]any{
		"call": {map[string]any{"method": "POST", "url": "https://api.example.com/t/T-1/labels?page=2", "headers": map[string]any{"X-Team": "billing"}}},
		"run":  {map[string]any{"command": []any{"tool", "--id", "abc"}, "env": map[string]any{"MODE": "fast"}}},
	}
	cases := []struct {
		name    string
		hostile map[string][]any
		want    string
	}{
		{"same shape, other values", map[string][]any{
			"call": {map[string]any{"url": "https://api.example.com/t/T-2/labels?page=3", "headers": map[string]any{"X-Team": "tech"}}},
			"run":  {map[string]any{"command": []any{"tool", "--id", "xyz"}, "env": map[string]any{"MODE": "safe"}}},
		}, ""},
		{"another host", map[string][]any{"call": {map[string]any{"url": "https://evil.example/t/T-1/labels?page=2", "headers": map[string]any{"X-Team": "b"}}}}, "goes to https://evil.example"},
		{"a path segment more", map[string][]any{"call": {map[string]any{"url": "https://api.example.com/t/T-1/x/labels?page=2", "headers": map[string]any{"X-Team": "b"}}}}, "segments instead of"},
		{"a dot segment", map[string][]any{"call": {map[string]any{"url": "https://api.example.com/t/../labels?page=2", "headers": map[string]any{"X-Team": "b"}}}}, "became"},
		{"an encoded slash", map[string][]any{"call": {map[string]any{"url": "https://api.example.com/t/a%2Fb/labels?page=2", "headers": map[string]any{"X-Team": "b"}}}}, "became"},
		{"a query parameter more", map[string][]any{"call": {map[string]any{"url": "https://api.example.com/t/T-1/labels?page=2&admin=1", "headers": map[string]any{"X-Team": "b"}}}}, "query parameters"},
		{"CRLF in a header", map[string][]any{"call": {map[string]any{"url": "https://api.example.com/t/T-1/labels?page=2", "headers": map[string]any{"X-Team": "b\r\nX-Admin: 1"}}}}, "header X-Team holds"},
		{"an option", map[string][]any{"run": {map[string]any{"command": []any{"tool", "--id", "--all"}, "env": map[string]any{"MODE": "x"}}}}, "became an option"},
		{"an argument more", map[string][]any{"run": {map[string]any{"command": []any{"tool", "--id", "a", "b"}, "env": map[string]any{"MODE": "x"}}}}, "4 arguments instead of 3"},
		{"NUL in env", map[string][]any{"run": {map[string]any{"command": []any{"tool", "--id", "a"}, "env": map[string]any{"MODE": "x\x00y"}}}}, "env MODE holds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(StructureDiff(base, tc.hostile), "\n")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMutantsReplaceOneLeafEach(t *testing.T) {
	c := Case{Input: map[string]any{"id": "T-1", "n": int64(3)}, LLM: map[string][]Answer{"pick": {{JSON: map[string]any{"mode": "fast"}}}}}
	ms := Mutants(c)
	// Two strings with every hostile value, alone and appended; one number with each hostile number.
	want := 2*2*len(HostileStrings) + len(hostileNumbers)
	if len(ms) != want {
		t.Fatalf("%d mutants, want %d", len(ms), want)
	}
	for _, m := range ms {
		in := m.Case.Input.(map[string]any)
		ans := m.Case.LLM["pick"][0].JSON.(map[string]any)
		changed := 0
		if in["id"] != "T-1" {
			changed++
		}
		if in["n"] != int64(3) {
			changed++
		}
		if ans["mode"] != "fast" {
			changed++
		}
		if changed != 1 {
			t.Fatalf("%s changed %d values", m.Source, changed)
		}
	}
	// The original case is untouched.
	if c.Input.(map[string]any)["id"] != "T-1" || c.LLM["pick"][0].JSON.(map[string]any)["mode"] != "fast" {
		t.Fatal("mutating changed the original case")
	}
}
