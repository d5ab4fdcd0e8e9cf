package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// diskSpec posts every item of its input, and keeps each answer (padded by the target) as the
// item's output: the ledger grows by tens of kilobytes per item.
const diskSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: disk
inputs:
  type: object
  properties:
    id: {type: string, pattern: "^[a-z0-9-]{1,40}$"}
    url: {const: "http://target.invalid"}
    items: {type: array, items: {type: integer}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 10ms}
steps:
  - id: send
    type: http
    method: POST
    url: "${{ inputs.url }}/items"
    body: {item: "${{ item }}"}
    for_each: "${{ inputs.items }}"
`

// TestFaultDiskFull runs a SQLite ledger on a small tmpfs that fills up in the middle of a run:
// the run must stop with an error that says the disk is full, the ledger must pass PRAGMA
// integrity_check, and once space is freed the same command must resume the run and finish it
// with each side effect applied once.
func TestFaultDiskFull(t *testing.T) {
	faultForm(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root: skipping the full-disk case")
	}
	c := newCLI(t, diskSpec)
	target := newCountTarget(t)
	target.pad = 16 << 10
	c.useTarget(target.URL)
	mnt := filepath.Join(c.dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): skipping the full-disk case", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	c.ledger = "sqlite:" + filepath.Join(mnt, "ledger.db")
	// The filler leaves the ledger about 3 MB; the run needs about three times that.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, bytes.Repeat([]byte{1}, 13<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const items = 200
	list := make([]string, items)
	for i := range list {
		list[i] = fmt.Sprint(i)
	}
	input := fmt.Sprintf(`{"id": "big-1", "url": %q, "items": [%s]}`, target.URL, strings.Join(list, ","))

	cmd := c.command("run", c.spec, "--input", input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := exitCodeOf(cmd.Run())
	firstApplied := len(target.applied)
	if code != 2 || firstApplied == 0 || firstApplied >= items {
		t.Fatalf("the first run exited %d after %d of %d items; want exit 2 part of the way:\n%s", code, firstApplied, items, tail(out.String(), 2000))
	}
	msg := lastWords(out.String())
	if !strings.Contains(msg, "disk is full") {
		t.Errorf("the first run's last words do not say the disk is full: %s", msg)
	}
	integrity(t, filepath.Join(mnt, "ledger.db"))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	cmd = c.command("run", c.spec, "--input", input)
	out.Reset()
	cmd.Stdout, cmd.Stderr = &out, &out
	if code := exitCodeOf(cmd.Run()); code != 0 {
		t.Fatalf("the run after space was freed exited %d:\n%s", code, tail(out.String(), 3000))
	}
	if !strings.Contains(out.String(), "resumed and is succeeded") {
		t.Errorf("the second command did not resume the run: %s", lastLine(out.String()))
	}
	integrity(t, filepath.Join(mnt, "ledger.db"))
	dlv := target.check(t, items)
	t.Logf("%d-item run on a 16 MB tmpfs with 3 MB free: stopped after %d items, exit %d: %q; ledger intact; after freeing space the same command resumed and finished; %s",
		items, firstApplied, code, msg, dlv)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// lastWords is what a failed command said last: its error, from the "pipectl:" line on.
func lastWords(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "pipectl: "); i >= 0 {
		return s[i:]
	}
	return lastLine(s)
}

// integrity runs PRAGMA integrity_check on a SQLite file.
func integrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(context.Background(), `PRAGMA integrity_check`).Scan(&res); err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	if res != "ok" {
		t.Fatalf("integrity_check: %s", res)
	}
}
