package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const escapeSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: escapes
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  timeout: 5s
  retry: {max_attempts: 1}
steps:
  - {id: call, type: http, method: GET, url: "http://target.invalid/x"}
`

// hostile is what an attacker puts in a server's answer, an input or a note: clear the screen,
// retitle the window, ring the bell, move to the line start and forge a line, a C1 CSI, and a
// right-to-left override.
const hostile = "boom \x1b[2J\x1b]0;owned\x07 \rforged\nstate     succeeded\t\u009b31m \u202eevil"

// TestControlCharactersAreShownNotObeyed: every text output shows untrusted control characters
// as escapes, while --format json keeps the exact text.
func TestControlCharactersAreShownNotObeyed(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, hostile)
	}))
	defer target.Close()
	c := newCLI(t, escapeSpec)
	c.useTarget(target.URL)
	key := "k\x1b[31m-1"
	input, _ := json.Marshal(map[string]string{"id": key})
	var texts []string
	run := func(args ...string) string {
		t.Helper()
		out, _ := c.command(args...).CombinedOutput()
		return string(out)
	}
	texts = append(texts, run("run", c.spec, "--input", string(input), "--log-format", "text"))
	id := c.runsJSON()[0]["id"].(string)
	run("note", id, hostile)
	texts = append(texts, run("runs", "show", id), run("runs", "list"), run("dlq", "list"), run("runs", "show", "no-such-run\x1b[2J"))
	for _, text := range texts {
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\u202e", "\nforged", "\nstate     succeeded"} {
			if strings.Contains(text, bad) {
				t.Errorf("text output holds %q raw:\n%s", bad, text)
			}
		}
	}
	show := texts[1]
	for _, want := range []string{`\x1b[2J`, `\x1b]0;owned\x07`, `\r`, `\u009b`, `\u202e`, `k\x1b[31m-1`} {
		if !strings.Contains(show, want) {
			t.Errorf("runs show does not show %s:\n%s", want, show)
		}
	}
	var doc struct {
		Run struct {
			Error string `json:"error"`
			Key   string `json:"idempotency_key"`
		}
		Notes []struct{ Text string }
	}
	raw := []byte(run("runs", "show", id, "--format", "json"))
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if !strings.HasSuffix(doc.Run.Error, hostile) || doc.Run.Key != key || len(doc.Notes) != 1 || doc.Notes[0].Text != hostile {
		t.Fatalf("json output is not exact: %+v", doc)
	}
	if !bytes.Contains(raw, []byte("\u202e")) {
		t.Fatal("json output escaped what it need not")
	}
}
