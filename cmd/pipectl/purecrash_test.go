package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// pureSpec is a run of pure steps only, long enough (a few thousand item attempts, all
// committed with the run's end) that a SIGKILL lands while they are computed.
const pureSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: pure-crash
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: fan
    type: transform
    for_each: ${{ lists.range(3000) }}
    output: ${{ item * 2 }}
  - {id: total, type: transform, output: "${{ steps.fan.output.size() }}"}
`

type pureShow struct {
	Run struct {
		ID, State string
	}
	Events   []struct{ From, To, Reason string }
	Attempts []struct {
		Step    string
		Item    *int
		Attempt int
		Outcome string
		Output  json.RawMessage
	}
}

// TestKilledBetweenPureStepsCLI kills `pipectl run` with SIGKILL while the pure steps of its
// run are being computed: nothing of them is in the ledger then (their attempts wait for the
// run's end), and the same command takes the run over, computes them again and records each
// attempt once, numbered 1.
func TestKilledBetweenPureStepsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	c := newCLI(t, pureSpec)
	// How long a whole run takes on this machine now.
	began := time.Now()
	if out, err := c.command("run", c.spec, "--input", `{"id": "calibrate"}`).CombinedOutput(); err != nil {
		t.Fatalf("calibration run: %v\n%s", err, out)
	}
	whole := time.Since(began)

	show := func(id string) pureShow {
		t.Helper()
		raw, err := c.command("runs", "show", id, "--format", "json").Output()
		if err != nil {
			t.Fatalf("runs show %s: %v", id, err)
		}
		var doc pureShow
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		return doc
	}
	runID := func(key string) string {
		for _, r := range c.runsJSON() {
			if r["idempotency_key"] == key {
				return fmt.Sprint(r["id"])
			}
		}
		return ""
	}

	landed := 0
	// The kill comes at a different share of a whole run each time, so that a machine that got
	// faster or slower since the calibration still sees kills between the steps.
	shares := []int{5, 3, 7, 4, 6, 8, 2, 5, 6, 4}
	for i := 0; i < len(shares) && landed < 2; i++ {
		key := fmt.Sprintf("order-%d", i)
		cmd := c.command("run", c.spec, "--input", fmt.Sprintf(`{"id": %q}`, key))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(whole*time.Duration(shares[i])/10, func() { cmd.Process.Kill() })
		if err := cmd.Wait(); exitCodeOf(err) != -int(syscall.SIGKILL) {
			continue // finished before the kill: nothing to learn from this one
		}
		id := runID(key)
		if id == "" {
			continue // killed before the run was created
		}
		before := show(id)
		if before.Run.State != "processing" || len(before.Attempts) != 0 {
			// Killed at the end, with the final commit made or not started: not between steps.
			if len(before.Attempts) != 0 && len(before.Attempts) != 3002 {
				t.Fatalf("a killed run holds %d attempts: pure attempts are committed all together", len(before.Attempts))
			}
			continue
		}
		landed++
		if out, err := c.command("run", c.spec, "--input", fmt.Sprintf(`{"id": %q}`, key)).CombinedOutput(); err != nil {
			t.Fatalf("resume of %s: %v\n%s", key, err, out)
		}
		after := show(id)
		if after.Run.State != "succeeded" {
			t.Fatalf("resumed run %s is %s", id, after.Run.State)
		}
		takenOver := false
		for _, e := range after.Events {
			takenOver = takenOver || (e.From == "processing" && e.To == "processing")
		}
		if !takenOver {
			t.Fatalf("the resumed run has no takeover event: %+v", after.Events)
		}
		items := map[int]bool{}
		for _, a := range after.Attempts {
			switch {
			case a.Step == "fan" && a.Item != nil:
				if items[*a.Item] || a.Attempt != 1 || a.Outcome != "succeeded" || string(a.Output) != fmt.Sprint(*a.Item*2) {
					t.Fatalf("item attempt %+v (output %s) after the resume", a, a.Output)
				}
				items[*a.Item] = true
			case a.Step == "fan":
				if a.Attempt != 0 {
					t.Fatalf("fan's list is attempt %d", a.Attempt)
				}
			case a.Step == "total":
				if a.Attempt != 1 || string(a.Output) != "3000" {
					t.Fatalf("total: attempt %d output %s", a.Attempt, a.Output)
				}
			}
		}
		if len(items) != 3000 || len(after.Attempts) != 3002 {
			t.Fatalf("%d items, %d attempts after the resume", len(items), len(after.Attempts))
		}
	}
	t.Logf("%d kills landed between pure steps (a whole run took %s)", landed, whole)
	if landed == 0 {
		t.Fatalf("no kill landed between the pure steps (a whole run took %s)", whole)
	}
}
