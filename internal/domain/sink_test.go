package domain

import "testing"

// TestCheckValue: the run-time check of a value's text by position, attacks first.
func TestCheckValue(t *testing.T) {
	cases := []struct {
		class SinkClass
		value any
		ok    bool
	}{
		{SinkURLPath, "", false}, // .../users/ instead of .../users/42
		{SinkPath, "", false},
		{SinkURLPath, "..", false},
		{SinkURLPath, "a&b=c", true},
		{SinkURLQuery, "a&b=c", false},
		{SinkURLQuery, "", true},
		{SinkQueryValue, "", true},
		{SinkURLQuery, float64(1e21), true}, // 1e+21: a number's exponent, not a space
		{SinkURLQuery, "1e+21", false},      // the same text as a string is data with a "+"
		{SinkArg, int64(-1), false},
		{SinkArg, float64(1e21), true},
		{SinkArgTail, int64(-1), true},
		{SinkFixed, int64(80), false},
		{SinkHeader, "a\r\nX: 1", false},
		{SinkHeader, "", true},
		{SinkBodyText, `x", "role": "admin`, false}, // JSON written as text in the spec
		{SinkBodyText, "x&role=admin", false},       // a form
		{SinkBodyText, "bob smith-2", true},
		{SinkBodyText, float64(1e21), true},
	}
	for _, c := range cases {
		err := c.class.CheckValue(c.value)
		if (err == nil) != c.ok {
			t.Errorf("%s %#v: got %v, want ok=%v", c.class, c.value, err, c.ok)
		}
	}
}

func TestSinkTextIsWhatStepsSend(t *testing.T) {
	// An object rendered into a url or argument goes out with its & and < as they are: the
	// run-time check must see the same characters, not JSON's HTML escapes.
	got := SinkText(map[string]any{"q": "a&b<c>"})
	if got != `{"q":"a&b<c>"}` {
		t.Fatalf("SinkText = %s", got)
	}
	if err := SinkURLQuery.CheckText(got); err == nil {
		t.Fatal("an & in a query position passed the check")
	}
}
