package ledger

import (
	"context"
	"testing"
)

// TestPipelinesAndSwitchHistory: a pipeline is known by a run or by a kill switch; the listing
// carries the switch's last position and the newest run, and the history keeps every toggle,
// a repeated one too.
func TestPipelinesAndSwitchHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if rows, err := s.Pipelines(ctx); err != nil || len(rows) != 0 {
			t.Fatalf("empty ledger: %v %v", rows, err)
		}
		older := newRun(t, "billing", "b1")
		if _, _, err := s.CreateRun(ctx, older, "t", nil); err != nil {
			t.Fatal(err)
		}
		newer := newRun(t, "billing", "b2")
		newer.CreatedAt = older.CreatedAt.Add(1e9)
		if _, _, err := s.CreateRun(ctx, newer, "t", nil); err != nil {
			t.Fatal(err)
		}
		for _, tog := range []struct {
			disabled      bool
			reason, actor string
		}{{true, "outage", "dave"}, {true, "still down", "erin"}, {false, "", "dave"}} {
			if err := s.SetPipelineDisabled(ctx, "reports", tog.disabled, tog.reason, tog.actor); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := s.Pipelines(ctx)
		if err != nil || len(rows) != 2 {
			t.Fatalf("pipelines: %+v %v", rows, err)
		}
		b, r := rows[0], rows[1]
		if b.Name != "billing" || b.Switched || b.Disabled || b.LastRunID != newer.ID || b.SpecText == "" {
			t.Fatalf("billing: %+v", b)
		}
		if r.Name != "reports" || !r.Switched || r.Disabled || r.Actor != "dave" || r.LastRunID != "" || r.At.IsZero() {
			t.Fatalf("reports: %+v", r)
		}
		h, err := s.SwitchHistory(ctx, "reports", 0)
		if err != nil || len(h) != 3 || h[0].Disabled || h[1].Reason != "still down" || h[2].Actor != "dave" {
			t.Fatalf("history: %+v %v", h, err)
		}
		if h, err := s.SwitchHistory(ctx, "", 1); err != nil || len(h) != 1 {
			t.Fatalf("limited history: %+v %v", h, err)
		}
	})
}
