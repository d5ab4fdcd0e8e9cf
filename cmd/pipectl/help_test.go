package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestEveryCommandHasAnExample walks the whole command tree.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := (&app{red: domain.NewRedactor(nil)}).rootCommand()
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		if !cmd.Hidden && strings.TrimSpace(cmd.Example) == "" {
			t.Errorf("%s has no Example", cmd.CommandPath())
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// TestVersion: --version and version agree, and an ldflags version wins over the build's.
func TestVersion(t *testing.T) {
	c := newCLI(t, "")
	_, a := c.exec(t, nil, "--version")
	_, b := c.exec(t, nil, "version")
	if a != b || !strings.HasPrefix(a, "pipectl v") {
		t.Fatalf("--version %q, version %q", a, b)
	}
	if v := buildVersion(); !strings.HasPrefix(v, "v") {
		t.Fatalf("build version %q", v)
	}
}

// TestCompletion asks the shell completion of a real ledger: run ids newest first with their
// pipeline and state, states, pipelines, the step ids of a run, formats; and a completion in a
// folder without a ledger creates none.
func TestCompletion(t *testing.T) {
	c := newCLI(t, exitSpec)
	for _, key := range []string{"one", "two", "three"} {
		if code, out := c.exec(t, nil, "run", c.spec, "--input", `{"id": "`+key+`", "mode": "ok"}`); code != 0 {
			t.Fatalf("run: %d %s", code, out)
		}
	}
	if code, out := c.exec(t, nil, "run", c.spec, "--input", `{"id": "rev", "mode": "review"}`); code != 3 {
		t.Fatalf("run: %d %s", code, out)
	}
	runs := c.runsJSON() // newest first
	complete := func(args ...string) []string {
		t.Helper()
		out, err := c.command(append([]string{"__complete"}, args...)...).Output()
		if err != nil {
			t.Fatalf("__complete %v: %v", args, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !strings.HasPrefix(lines[len(lines)-1], ":") {
			t.Fatalf("no directive: %q", out)
		}
		var values []string
		for _, l := range lines[:len(lines)-1] {
			v, _, _ := strings.Cut(l, "\t")
			values = append(values, v)
		}
		return values
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r["id"].(string))
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"runs", "show", ""}, ids},
		{[]string{"review", ids[0][:10]}, filterPrefix(ids, ids[0][:10])},
		{[]string{"signal", ids[0], ""}, []string{"first", "check", "boom"}},
		{[]string{"replay", ids[1], "--from", "ch"}, []string{"check"}},
		{[]string{"runs", "list", "--state", ""}, stateNames()},
		{[]string{"runs", "list", "--pipeline", ""}, []string{"demo"}},
		{[]string{"disable", "d"}, []string{"demo"}},
		{[]string{"stats", "--format", ""}, []string{"table", "json"}},
		{[]string{"validate", "--format", ""}, []string{"text", "json", "github", "sarif"}},
		{[]string{"dlq", "redrive", ""}, nil},
	} {
		if got := complete(tc.args...); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("complete %v:\n got %v\nwant %v", tc.args, got, tc.want)
		}
	}
	// Outside any ledger: nothing offered, nothing created.
	empty := t.TempDir()
	cmd := exec.Command(binary, "__complete", "runs", "show", "")
	cmd.Dir = empty
	if out, err := cmd.Output(); err != nil || strings.Contains(string(out), "\t") {
		t.Fatalf("completion without a ledger: %v %q", err, out)
	}
	if m, _ := exec.Command("ls", "-A", empty).Output(); len(m) != 0 {
		t.Fatalf("a completion created %s", m)
	}
}

func filterPrefix(list []string, prefix string) []string {
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}
