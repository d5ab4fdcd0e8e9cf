package operate_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/dsl"
	"github.com/pipectl/pipectl/internal/engine"
	"github.com/pipectl/pipectl/internal/ledger"
	"github.com/pipectl/pipectl/internal/operate"
	"github.com/pipectl/pipectl/internal/steps"
)

const approvalSpec = `apiVersion: pipectl/v1
kind: Pipeline
name: approve-me
inputs:
  type: object
  required: [id]
  additionalProperties: false
  properties: {id: {type: string}, n: {type: integer}}
idempotency: {key: "${{ inputs.id }}"}
steps:
  - id: ask
    type: approval
    message: "ok?"
  - id: done
    type: transform
    output: "${{ steps.ask.output.decision }}"
`

type bundle struct {
	ops   *operate.Ops
	store *ledger.Store
	p     *domain.Pipeline
}

// setup wires operations to a real SQLite ledger and the concrete steps, as pipectl does.
func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	store, err := ledger.Open(context.Background(), "sqlite:"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte(approvalSpec), 0o644)
	v, err := dsl.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, diags, err := v.ParseFile(path)
	if err != nil || p == nil {
		t.Fatalf("%v %v", err, diags)
	}
	ops := &operate.Ops{Store: store, Validator: v, NewEngine: func(actor string, v *dsl.Validator, providers operate.Providers) (*engine.Engine, error) {
		return &engine.Engine{Store: store, Renderer: dsl.NewEvaluator(v.Expressions()), Owner: engine.CurrentOwner(), Actor: actor, LeaseTTL: 30 * time.Second, Log: slog.New(slog.DiscardHandler),
			Steps: map[domain.StepType]domain.StepExecutor{domain.StepTransform: steps.Transform{}, domain.StepApproval: steps.Approval{}}}, nil
	}}
	return &bundle{ops: ops, store: store, p: p}
}

// paused starts a run as alice and leaves it in needs_review.
func (b *bundle) paused(t *testing.T, id string) *domain.Run {
	t.Helper()
	res, err := b.ops.Start(context.Background(), "alice", b.p, map[string]any{"id": id}, nil, engine.RunOptions{})
	if err != nil || res.Run.State != domain.StateNeedsReview {
		t.Fatalf("start: %v %+v", err, res)
	}
	return res.Run
}

func TestKinds(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	r := b.paused(t, "k1")
	b.ops.ForbidSelfApproval = true
	for _, tc := range []struct {
		name string
		do   func() error
		kind operate.Kind
		want string
	}{
		{"missing run", func() error { _, err := b.ops.Note(ctx, "bob", "nosuch", "x"); return err }, operate.KindNotFound, "no run nosuch"},
		{"empty note", func() error { _, err := b.ops.Note(ctx, "bob", r.ID, "  "); return err }, operate.KindInvalid, "the note is empty"},
		{"disable without reason", func() error { return b.ops.SetDisabled(ctx, "bob", b.p.Name, true, " ") }, operate.KindInvalid, "reason is required"},
		{"self approval", func() error {
			_, err := b.ops.Review(ctx, "alice", operate.ReviewRequest{RunID: r.ID, Approve: true, Enqueue: true})
			return err
		}, operate.KindForbidden, "alice submitted run"},
		{"stale proposal hash", func() error {
			_, err := b.ops.Review(ctx, "bob", operate.ReviewRequest{RunID: r.ID, Approve: true, ProposalHash: "beef", Enqueue: true})
			return err
		}, operate.KindRefused, "nothing was changed"},
		{"signal to a run in review", func() error {
			_, err := b.ops.Signal(ctx, "bob", operate.SignalRequest{RunID: r.ID, Step: "ask", Payload: map[string]any{}, Enqueue: true})
			return err
		}, operate.KindRefused, "is needs_review, not waiting_external"},
		{"redrive of a live run", func() error { _, err := b.ops.Redrivable(ctx, r.ID); return err }, operate.KindRefused, "only dead-lettered"},
		{"input against the schema", func() error {
			_, err := b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: b.p, Input: map[string]any{"id": 3, "x": 1}})
			return err
		}, operate.KindInputSchema, "input does not match approve-me's inputs schema"},
		{"a key from the input that would occupy a schedule slot", func() error {
			_, err := b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: b.p, Input: map[string]any{"id": "schedule:2030-01-01T00:00:00.000Z"}})
			return err
		}, operate.KindInvalid, "reserved for schedule slots"},
		{"the same through a run in this process", func() error {
			_, err := b.ops.Start(ctx, "bob", b.p, map[string]any{"id": "schedule:2030-01-01T00:00:00.000Z"}, nil, engine.RunOptions{})
			return err
		}, operate.KindInvalid, "reserved for schedule slots"},
		{"replay with a bad llm mode", func() error {
			_, err := b.ops.Replay(ctx, "bob", operate.ReplayRequest{RunID: r.ID, LLM: "maybe"})
			return err
		}, operate.KindInvalid, "recorded or live"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if operate.KindOf(err) != tc.kind || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (kind %d), want kind %d with %q", err, operate.KindOf(err), tc.kind, tc.want)
			}
		})
	}
	// Nothing a refusal touched was recorded.
	events, _ := b.store.Events(ctx, r.ID)
	notes, _ := b.store.Notes(ctx, r.ID)
	if len(events) != 3 || len(notes) != 0 {
		t.Fatalf("refusals recorded something: %d events, %d notes", len(events), len(notes))
	}
}

func TestReviewBySomeoneElseEnqueues(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	b.ops.ForbidSelfApproval = true
	r := b.paused(t, "k2")
	doc, _, err := b.ops.Show(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	d, err := b.ops.Review(ctx, "bob", operate.ReviewRequest{RunID: r.ID, Approve: true, Note: "fine", Enqueue: true})
	if err != nil {
		t.Fatal(err)
	}
	// Enqueued: processing with an expired lease, for any worker to take over.
	if d.Run.State != domain.StateProcessing || d.Run.LeaseOwner != "" {
		t.Fatalf("after approval: %s owned by %q", d.Run.State, d.Run.LeaseOwner)
	}
	events, _ := b.store.Events(ctx, r.ID)
	last := events[len(events)-1]
	if last.Actor != "bob" || !strings.Contains(last.Reason, "approved by bob") || !strings.HasSuffix(last.Reason, ": fine") {
		t.Fatalf("event %+v", last)
	}
	if len(doc.Events) != 3 || doc.Run.Input == nil {
		t.Fatalf("show: %+v", doc)
	}
	// The same decision again loses: the run is no longer in review.
	_, err = b.ops.Review(ctx, "carol", operate.ReviewRequest{RunID: r.ID, Approve: true, Enqueue: true})
	if operate.KindOf(err) != operate.KindRefused {
		t.Fatalf("second review: %v", err)
	}
}

func TestSubmitKeys(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	p := *b.p
	p.Idempotency.Key = "" // the caller's key applies only when the spec declares none
	first, err := b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: &p, Input: map[string]any{"id": "a"}, Key: "order-1"})
	if err != nil || first.Duplicate || first.Run.IdempotencyKey != "order-1" {
		t.Fatalf("%v %+v", err, first)
	}
	again, err := b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: &p, Input: map[string]any{"id": "a"}, Key: "order-1"})
	if err != nil || !again.Duplicate || again.Run.ID != first.Run.ID {
		t.Fatalf("%v %+v", err, again)
	}
	_, err = b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: &p, Input: map[string]any{"id": "b"}, Key: "order-1"})
	if operate.KindOf(err) != operate.KindConflict {
		t.Fatalf("reused key: %v", err)
	}
	keyed, err := b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: b.p, Input: map[string]any{"id": "z"}, Key: "ignored"})
	if err != nil || keyed.Run.IdempotencyKey != "z" {
		t.Fatalf("spec key: %v %+v", err, keyed)
	}
	if err := b.ops.SetDisabled(ctx, "bob", p.Name, true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	_, err = b.ops.Submit(ctx, "bob", operate.SubmitRequest{Pipeline: &p, Input: map[string]any{"id": "c"}})
	if operate.KindOf(err) != operate.KindDisabled {
		t.Fatalf("disabled: %v", err)
	}
}
