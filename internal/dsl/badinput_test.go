package dsl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestHostileInput(t *testing.T) {
	v := newTestValidator(t)
	valid, err := os.ReadFile("../../pipelines/ticket-triage.yaml")
	if err != nil {
		t.Fatal(err)
	}
	big := append(append([]byte{}, valid...), []byte("\ndescription: "+strings.Repeat("x", 10<<20)+"\n")...)
	tests := []struct {
		name string
		src  []byte
		want string
	}{
		{"binary junk", []byte("\x7fELF\x02\x01\x01\x00\x00\x00garbage\xff\xfe"), "1:1: file is not UTF-8 text"},
		{"invalid utf-8", []byte("name: \xc3\x28\n"), "1:1: file is not UTF-8 text"},
		{"ten megabytes", big, "1:1: file is " + strconv.Itoa(len(big)) + " bytes; pipeline files are limited to 4194304"},
		{"only a scalar", []byte("hello"), "1:1: a pipeline file must be a mapping"},
		{"tab indentation", []byte("apiVersion: pipectl/v1\nsteps:\n\t- id: a\n"), "3:1: invalid YAML: found character that cannot start any token"},
		{"unclosed quote", []byte("name: \"abc\n"), "invalid YAML"},
		{"key without value mapping", []byte("? [a, b]\n: c\n"), "mapping keys must be plain scalars"},
		{"infinite float", []byte("apiVersion: pipectl/v1\nalerts: {p95_seconds: .inf}\n"), "2:23: alerts.p95_seconds: \".inf\" is not a finite number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, diags := v.Parse("f.yaml", tc.src)
			if p != nil {
				t.Fatal("hostile input produced a pipeline")
			}
			var all []string
			for _, d := range diags {
				all = append(all, d.String())
			}
			joined := strings.Join(all, "\n")
			if !strings.Contains(joined, tc.want) {
				t.Fatalf("want %q in:\n%s", tc.want, joined)
			}
		})
	}
}

func TestReadLimitRefusesHugeFileWithoutReadingIt(t *testing.T) {
	v := newTestValidator(t)
	path := filepath.Join(t.TempDir(), "huge.yaml")
	if err := os.WriteFile(path, bytes.Repeat([]byte("# padding\n"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p, diags, err := v.ParseFile(path)
	if err != nil || p != nil || len(diags) != 1 || !strings.Contains(diags[0].Message, "larger than 4194304 bytes") {
		t.Fatalf("got p=%v diags=%v err=%v", p, diags, err)
	}
}

func TestDiscoverFolders(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, body string) {
		t.Helper()
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "apiVersion: pipectl/v1\nkind: Pipeline\n")
	write("nested/b.yml", "kind: \"Pipeline\" # comment\n")
	write("nested/c.test.yaml", "kind: PipelineTest\n")
	write("config.yaml", "providers: {}\n")
	write("notes.txt", "kind: Pipeline\n")
	write(".hidden/d.yaml", "kind: Pipeline\n")
	// A symlink loop and a dangling link must not hang or crash discovery.
	if err := os.Symlink(dir, filepath.Join(dir, "nested", "loop")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "self"), filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	files, errs := Discover([]string{dir, filepath.Join(dir, "missing.yaml")})
	var rel []string
	for _, f := range files {
		r, _ := filepath.Rel(dir, f)
		rel = append(rel, r)
	}
	if got := strings.Join(rel, ","); got != "a.yaml,nested/b.yml" {
		t.Fatalf("discovered %q", got)
	}
	if len(errs) != 2 {
		t.Fatalf("want two unreadable paths (self loop, missing), got %v", errs)
	}
	var loop, missing bool
	for _, e := range errs {
		loop = loop || errors.Is(e, syscall.ELOOP)
		missing = missing || errors.Is(e, os.ErrNotExist)
	}
	if !loop || !missing {
		t.Fatalf("errors do not name the causes: %v", errs)
	}
}
