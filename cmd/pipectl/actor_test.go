package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/ledger"
)

const actorSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: actors
inputs: {type: object, properties: {id: {type: string}, dir: {type: string, pattern: "^[^\\x00]+$"}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - {id: check, type: exec, command: [sh, "-uc", 'test -e "$DIR/ready"'], env: {DIR: "${{ inputs.dir }}"}}
`

// TestActorsRecordedConsistently: a redrive queued by an operator and executed by a worker
// records the operator on the redrive and the worker's own identity on everything the worker
// did (claim and finish), never the OS user the worker happens to run as. Both ledgers.
func TestActorsRecordedConsistently(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			c := newCLI(t, actorSpec)
			if backend == "postgres" {
				c.ledger = postgresDSN(t)
			}
			input := fmt.Sprintf(`{"id": "a1", "dir": %q}`, c.dir)
			if code, out := c.exec(t, nil, "run", c.spec, "--input", input, "--as", "alice"); code != 1 {
				t.Fatalf("run: exit %d\n%s", code, out)
			}
			id := c.runsJSON()[0]["id"].(string)
			os.WriteFile(filepath.Join(c.dir, "ready"), nil, 0o644)
			if code, out := c.exec(t, nil, "dlq", "redrive", id, "--enqueue", "--as", "oncall"); code != 0 {
				t.Fatalf("redrive: exit %d\n%s", code, out)
			}
			if code, out := c.exec(t, nil, "worker", "--as", "bob"); code != 2 {
				t.Fatalf("worker --as: exit %d\n%s", code, out)
			}
			w := startWorker(t, c.dir, c.ledger)
			store, err := ledger.Open(context.Background(), c.ledger)
			if err != nil {
				t.Fatal(err)
			}
			waitForStates(t, store, 1, 30*time.Second, nil)
			store.Close()
			w.cmd.Process.Signal(syscall.SIGTERM)
			w.cmd.Wait()
			var got []string
			for _, e := range c.show(t, id).Events {
				actor := e.Actor
				if strings.HasPrefix(actor, w.owner) { // host:pid, then the process start
					actor = "the worker"
				}
				got = append(got, e.From+">"+e.To+" by "+actor)
			}
			want := []string{">queued by alice", "queued>processing by alice", "processing>failed_permanent by alice",
				"failed_permanent>queued by oncall", "queued>processing by the worker", "processing>succeeded by the worker"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("events\n got %v\nwant %v\n%s", got, want, w.log)
			}
		})
	}
}
