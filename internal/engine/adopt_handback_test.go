package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
	"github.com/pipectl/pipectl/internal/engine"
)

// TestAdoptAfterHandBackSaysHandedBack: `pipectl run` of the input of a run handed back on
// purpose (ReleaseLease, or an operator's enqueue) takes it over: the event says it was handed
// back, as a worker's claim does, and names no owner where there was none.
func TestAdoptAfterHandBackSaysHandedBack(t *testing.T) {
	for _, prior := range []string{"otherhost:123:abc", ""} {
		b := setup(t)
		ctx := context.Background()
		p := b.pipeline(t, header+`
steps:
  - id: a
    type: transform
    output: {x: 1}
`)
		input := map[string]any{"k": prior}
		res, err := b.eng.Run(ctx, p, input, engine.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := res.Run
		// Handed back on purpose: as ReleaseLease leaves it (owner kept), or as an operator's
		// enqueue leaves it (no owner): lease_expires_at = 1.
		if _, err := b.store.DB().Exec(`UPDATE runs SET state = 'processing', finished_at = 0, lease_owner = ?, lease_expires_at = ? WHERE id = ?`, prior, domain.LeaseHandedBack.UnixMilli(), r.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := b.eng.Run(ctx, p, input, engine.RunOptions{}); err != nil {
			t.Fatal(err)
		}
		events, _ := b.store.Events(ctx, r.ID)
		for _, e := range events {
			if e.From == domain.StateProcessing && e.To == domain.StateProcessing {
				t.Logf("prior owner %q: takeover event %q", prior, e.Reason)
				if !strings.Contains(e.Reason, "(handed back)") || strings.Contains(e.Reason, "  ") {
					t.Errorf("engine.adopt takes over a handed-back run as %q (ClaimBatch says %q)", e.Reason, "taken over ... (handed back) by ...")
				}
			}
		}
	}
}
