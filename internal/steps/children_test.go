package steps

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// startGroup starts `sleep 300` as the leader of its own process group, reaped when it dies.
func startGroup(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	return cmd.Process.Pid
}

func alive(pid int) bool {
	st, ok := readStat(pid)
	return ok && st.state != "Z" && st.state != "X"
}

// TestChildRecordClear: a record left by a dead owner gets its group killed before the step
// runs again; a record whose pid was recycled, a record naming a dead group and a record
// someone else planted kill nothing.
func TestChildRecordClear(t *testing.T) {
	for _, tc := range []struct {
		name string
		// record turns the live group's pid into the record to write.
		record func(pid int) childInfo
		mode   os.FileMode
		killed bool
		err    string
	}{
		{name: "left by a dead owner", record: func(pid int) childInfo { return childInfo{PGID: pid, Start: procStart(pid)} }, mode: 0o600, killed: true},
		{name: "pid recycled", record: func(pid int) childInfo { return childInfo{PGID: pid, Start: "1"} }, mode: 0o600},
		{name: "no start time", record: func(pid int) childInfo { return childInfo{PGID: pid} }, mode: 0o600},
		{name: "planted, readable by others", record: func(pid int) childInfo { return childInfo{PGID: pid, Start: procStart(pid)} }, mode: 0o644, err: "not a private file"},
		{name: "group of init", record: func(int) childInfo { return childInfo{PGID: 1, Start: procStart(1)} }, mode: 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := startGroup(t)
			dir := filepath.Join(t.TempDir(), "children")
			e := Exec{ChildDir: dir}
			rec, err := e.childRecord(&domain.StepCall{StepKey: "k-" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(tc.record(pid))
			if err := os.WriteFile(rec.path, b, tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(rec.path, tc.mode)
			err = rec.clear(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for alive(pid) && tc.killed && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if alive(pid) == tc.killed {
				t.Fatalf("alive = %v, want killed = %v", alive(pid), tc.killed)
			}
			if _, err := os.Stat(rec.path); tc.err == "" && err == nil {
				t.Fatal("the record was left in place")
			}
		})
	}
}

// TestPrivateDir: the record folder must belong to this user and be writable by no one else.
func TestPrivateDir(t *testing.T) {
	dir := t.TempDir()
	if err := PrivateDir(filepath.Join(dir, "a", "children")); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := PrivateDir(open); err == nil {
		t.Fatal("a world-writable folder was accepted")
	}
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "a"), link)
	if err := PrivateDir(link); err == nil {
		t.Fatal("a symbolic link was accepted")
	}
}

// TestChildEnv: the child gets PATH, HOME, locale, the step's env and PIPECTL_*; nothing
// else, and no inherited value that holds a secret, whatever its name.
func TestChildEnv(t *testing.T) {
	t.Setenv("LC_TIME", "C")
	t.Setenv("LC_TOKEN", "s3cret-value")
	t.Setenv("OPENAI_API_KEY", "sk-x")
	t.Setenv("USER", "someone")
	t.Setenv("TMPDIR", "/tmp/x")
	call := &domain.StepCall{RunID: "r1", Pipeline: "p", Step: &domain.Step{ID: "s"}, Attempt: 2, StepKey: "k", ItemIndex: domain.NoItem,
		Redactor: domain.NewRedactor([]string{"s3cret-value"})}
	env := childEnv(call, map[string]string{"DECLARED": "s3cret-value"})
	var names []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	for _, want := range []string{"PATH", "LC_TIME", "DECLARED", "PIPECTL_RUN_ID", "PIPECTL_PIPELINE", "PIPECTL_STEP", "PIPECTL_ATTEMPT", "PIPECTL_IDEMPOTENCY_KEY"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
	for _, not := range []string{"LC_TOKEN", "OPENAI_API_KEY", "USER", "TMPDIR", "PIPECTL_ITEM_INDEX"} {
		if slices.Contains(names, not) {
			t.Errorf("%s inherited: %v", not, names)
		}
	}
}
