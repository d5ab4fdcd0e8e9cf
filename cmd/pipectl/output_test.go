package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestVisible(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain\ttext\n", "plain\ttext\n"},
		{"\x1b[2J\x07\r\b", `\x1b[2J\x07\x0d\x08`},
		{"del\x7f c1\u009b bidi\u202e zw\u200b", `del\u007f c1\u009b bidi\u202e zw\u200b`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"ünïcödé ok", "ünïcödé ok"},
	}
	for _, tc := range tests {
		if got := string(visible([]byte(tc.in))); got != tc.want {
			t.Errorf("visible(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A JSON log line goes to stderr through the same writer: what it escapes must keep the line
// valid JSON with the same values.
func TestVisibleKeepsJSONLogsExact(t *testing.T) {
	msg := "a\x7fb \u009b[31m \u202eevil \x1b[2J \\\u202e end"
	var raw bytes.Buffer
	slog.New(slog.NewJSONHandler(&raw, nil)).Info("m", "error", msg)
	out := visible(raw.Bytes())
	var line map[string]any
	if err := json.Unmarshal(out, &line); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if line["error"] != msg {
		t.Fatalf("got %q, want %q", line["error"], msg)
	}
	if bytes.ContainsAny(out, "\x1b\x7f\u009b\u202e") {
		t.Fatalf("raw control characters left: %q", out)
	}
}
