package domain

import (
	"bytes"
	"encoding/json"
	"sort"
	"testing"
)

// oldEncode is the encoding as it was written before the scalar fast path: json.Marshal for
// every key and every value that is not a map, a list or a float.
func oldEncode(t *testing.T, v any, typed bool) []byte {
	var b bytes.Buffer
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			b.WriteByte('{')
			for i, k := range keys {
				if i > 0 {
					b.WriteByte(',')
				}
				kb, _ := json.Marshal(k)
				b.Write(kb)
				b.WriteByte(':')
				walk(x[k])
			}
			b.WriteByte('}')
		case []any:
			b.WriteByte('[')
			for i, e := range x {
				if i > 0 {
					b.WriteByte(',')
				}
				walk(e)
			}
			b.WriteByte(']')
		default:
			enc, err := json.Marshal(x)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(enc)
			if _, isFloat := x.(float64); isFloat && typed && !bytes.ContainsAny(enc, ".eE") {
				b.WriteString(".0")
			}
		}
	}
	walk(v)
	return b.Bytes()
}

// TestJSONScalarsAsEncodingJSON: texts, whole numbers, booleans and null come out of
// MarshalJSON and CanonicalJSON byte for byte as json.Marshal writes them, escapes included.
func TestJSONScalarsAsEncodingJSON(t *testing.T) {
	texts := []string{"", "plain", "with space", `quote"`, `back\slash`, "<b>&amp;</b>", "a&b", "a<b", "a>b", "del\x7f", "tab\there", "nl\n", "\x00\x1f\x7f",
		"é ünïcode", "日本", "line\u2028sep\u2029", "bad\xffutf8", "\xed\xa0\x80", "~!@#$%^*()_+{}|:?`-=[];',./", "emoji 😀"}
	m := map[string]any{}
	var list []any
	for i, s := range texts {
		m[s] = s
		list = append(list, s, int64(i)-8, i*1000003, i%2 == 0, nil, float64(i)/3, float64(i))
	}
	m["list"] = list
	m["nested"] = map[string]any{"n": int64(-9223372036854775808), "max": int64(9223372036854775807), "z": 0, "t": true}
	for _, v := range []any{m, list, "x", int64(3), nil, true} {
		got, err := MarshalJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := oldEncode(t, v, true); !bytes.Equal(got, want) {
			t.Fatalf("MarshalJSON:\n got %s\nwant %s", got, want)
		}
		got, err = CanonicalJSON(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := oldEncode(t, v, false); !bytes.Equal(got, want) {
			t.Fatalf("CanonicalJSON:\n got %s\nwant %s", got, want)
		}
	}
}
