package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/llm/llmtest"
)

// numbersSpec prices an order with a model, holds it for a person, then computes with the
// gated numbers. CEL tells 635 from 635.0: total + 0.5 only works on the double the gate
// passed, so the last step fails if the value read back from the ledger changed type.
const numbersSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: numbers
inputs: {type: object, required: [id], properties: {id: {type: string}}}
idempotency: {key: "${{ inputs.id }}"}
defaults:
  timeout: 5s
  retry: {max_attempts: 1}
steps:
  - id: price
    type: llm
    model: test-model
    temperature: 0
    prompt: "Price order ${{ inputs.id }}"
    max_reasks: 1
    output:
      schema:
        type: object
        additionalProperties: false
        required: [subtotal, tax, total]
        properties:
          subtotal: {type: number}
          tax: {type: number}
          total: {type: number}
    rules:
      - expr: output.subtotal + output.tax == output.total
        message: the total must add up
      - expr: output.total < 1000.0
        message: large totals need a person
        on_fail: review
  - id: hold
    type: approval
    needs: [price]
    message: Send order ${{ inputs.id }}?
  - id: sum
    type: transform
    needs: [hold]
    output:
      with_fee: "${{ steps.price.output.total + 0.5 }}"
      adds_up: "${{ steps.price.output.subtotal + steps.price.output.tax == steps.price.output.total }}"
`

// TestNumbersSurviveTheLedger: the values a gate passed are the values later steps see, when
// the run continues in another process after an approval step, after a person approved a held
// proposal, and in a replay that reuses the recorded outputs. A number JSON cannot carry (1e400)
// is refused at the gate with its reason, and the re-ask gets it right.
func TestNumbersSurviveTheLedger(t *testing.T) {
	sumOf := func(t *testing.T, c *cli, id string) map[string]any {
		t.Helper()
		for _, a := range c.state(t, id).Attempts {
			if a.Step == "sum" && a.Outcome == "succeeded" {
				var out map[string]any
				json.Unmarshal(a.Output, &out)
				return out
			}
		}
		t.Fatalf("run %s has no sum output", id)
		return nil
	}
	approve := func(t *testing.T, c *cli, model *llmtest.Server, id string, wantCode int) {
		t.Helper()
		if code, out := c.exec(t, model, "review", id, "--approve"); code != wantCode {
			t.Fatalf("approve: exit %d, want %d\n%s", code, wantCode, out)
		}
	}

	t.Run("resumed after an approval step, then replayed", func(t *testing.T) {
		model := llmtest.New()
		defer model.Close()
		model.Push(llmtest.Answer(`{"subtotal": 600, "tax": 35, "total": 635}`))
		c := newCLI(t, numbersSpec)
		if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "n-1"}`); code != 3 {
			t.Fatalf("run: exit %d\n%s", code, out)
		}
		id := c.runsJSON()[0]["id"].(string)
		approve(t, c, model, id, 0)
		if got := sumOf(t, c, id); got["with_fee"] != 635.5 || got["adds_up"] != true {
			t.Fatalf("sum after the resume: %v", got)
		}
		code, out := c.exec(t, model, "replay", id, "--from", "sum")
		if code != 0 {
			t.Fatalf("replay: exit %d\n%s", code, out)
		}
		var replayID string
		for _, r := range c.runsJSON() {
			if r["id"] != id {
				replayID = r["id"].(string)
			}
		}
		if got := sumOf(t, c, replayID); got["with_fee"] != 635.5 {
			t.Fatalf("sum in the replay: %v", got)
		}
	})

	t.Run("resumed after pipectl was killed between steps", func(t *testing.T) {
		model := llmtest.New()
		defer model.Close()
		model.Push(llmtest.Answer(`{"subtotal": 600, "tax": 35, "total": 635}`))
		// The approval step gives way to a child that hangs the first time: pipectl is killed
		// while it waits, with the gated price already in the ledger.
		spec := strings.Replace(numbersSpec, `  - id: hold
    type: approval
    needs: [price]
    message: Send order ${{ inputs.id }}?`, `  - id: hold
    type: exec
    needs: [price]
    command: [./hang-once.sh]`, 1)
		c := newCLI(t, spec)
		script := "#!/bin/sh\nif [ ! -e started ]; then touch started; exec sleep 5; fi\n"
		if err := os.WriteFile(filepath.Join(c.dir, "hang-once.sh"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := c.command("run", c.spec, "--input", `{"id": "n-k"}`)
		cmd.Env = append(cmd.Env, "OPENAI_BASE_URL="+model.BaseURL(), "OPENAI_API_KEY=test-key")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(c.dir, "started")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the hold step never started")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "n-k"}`); code != 0 {
			t.Fatalf("the resumed run: exit %d\n%s", code, out)
		}
		if n := len(model.Requests()); n != 1 {
			t.Fatalf("the model was asked %d times; the resumed run must use the recorded price", n)
		}
		id := c.runsJSON()[0]["id"].(string)
		if got := sumOf(t, c, id); got["with_fee"] != 635.5 || got["adds_up"] != true {
			t.Fatalf("sum after the resume: %v", got)
		}
	})

	t.Run("an approved proposal", func(t *testing.T) {
		model := llmtest.New()
		defer model.Close()
		model.Push(llmtest.Answer(`{"subtotal": 1200, "tax": 100, "total": 1300}`))
		c := newCLI(t, numbersSpec)
		if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "n-2"}`); code != 3 {
			t.Fatalf("run: exit %d\n%s", code, out)
		}
		id := c.runsJSON()[0]["id"].(string)
		approve(t, c, model, id, 3) // the proposal; the run then stops at the approval step
		approve(t, c, model, id, 0)
		if got := sumOf(t, c, id); got["with_fee"] != 1300.5 || got["adds_up"] != true {
			t.Fatalf("sum after approving the proposal: %v", got)
		}
	})

	t.Run("a number JSON cannot carry is refused", func(t *testing.T) {
		model := llmtest.New()
		defer model.Close()
		model.Push(llmtest.Answer(`{"subtotal": 1e400, "tax": 0, "total": 1e400}`), llmtest.Answer(`{"subtotal": 1, "tax": 0.25, "total": 1.25}`))
		c := newCLI(t, numbersSpec)
		if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "n-3"}`); code != 3 {
			t.Fatalf("run: exit %d\n%s", code, out)
		}
		doc := c.state(t, c.runsJSON()[0]["id"].(string))
		if len(doc.ModelCalls) != 2 || doc.ModelCalls[0].Outcome != "invalid_json" || !strings.Contains(string(doc.ModelCalls[0].Reasons), "1e400") ||
			!strings.Contains(string(doc.ModelCalls[0].Reasons), "out of the range of a 64-bit float") || doc.ModelCalls[1].Outcome != "accepted" {
			t.Fatalf("model calls: %+v", doc.ModelCalls)
		}
		if code, out := c.exec(t, model, "run", c.spec, "--input", `{"id": "n-4", "n": -1e400}`); code != 2 || !strings.Contains(out, "-1e400") {
			t.Fatalf("input with -1e400: exit %d\n%s", code, out)
		}
	})
}
