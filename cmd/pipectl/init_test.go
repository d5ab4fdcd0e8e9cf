package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitIsGreenAtOnce: what pipectl init writes validates, passes its tests (the adversarial
// ones too), runs offline from its recording, and is never written over.
func TestInitIsGreenAtOnce(t *testing.T) {
	c := newCLI(t, "")
	code, out := c.exec(t, nil, "init", "sentiment")
	if code != 0 || !strings.Contains(out, "wrote pipelines/sentiment.recording.json") {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	spec := filepath.Join("pipelines", "sentiment.yaml")
	head, _ := os.ReadFile(filepath.Join(c.dir, spec))
	if !strings.HasPrefix(string(head), "# yaml-language-server: $schema=../schemas/pipeline.schema.json\n") {
		t.Fatalf("no editor schema comment:\n%s", head)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "schemas", "pipeline.schema.json")); err != nil {
		t.Fatal("the schema the comment names was not written")
	}
	for _, args := range [][]string{
		{"validate", "pipelines/"},
		{"test", "pipelines/sentiment.test.yaml"},
		{"test", "--adversarial", "pipelines/"},
		{"run", spec, "--input", initInput, "--llm-replay", "pipelines/sentiment.recording.json"},
	} {
		if code, out := c.exec(t, nil, args...); code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
	}
	before, _ := os.ReadFile(filepath.Join(c.dir, spec))
	if code, out := c.exec(t, nil, "init", "sentiment"); code != 4 || !strings.Contains(out, "exists; nothing was written") {
		t.Fatalf("init over an existing pipeline: exit %d\n%s", code, out)
	}
	if after, _ := os.ReadFile(filepath.Join(c.dir, spec)); string(after) != string(before) {
		t.Fatal("init wrote over a pipeline")
	}
	for _, bad := range []string{"Bad_Name", "../escape", "-rf"} {
		if code, out := c.exec(t, nil, "init", bad); code != 2 {
			t.Fatalf("init %q: exit %d\n%s", bad, code, out)
		}
	}
}
