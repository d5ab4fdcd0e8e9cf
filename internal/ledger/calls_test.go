package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// TestModelCallTraceRoundTrip stores model calls with and without the provider's trace fields
// and reads them back on every backend: a figure the provider did not report stays absent
// (NULL), it does not turn into 0.
func TestModelCallTraceRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		r := newRun(t, "p", "calls")
		if _, _, err := s.CreateRun(ctx, r, "test", nil); err != nil {
			t.Fatal(err)
		}
		ms, reasoning := int64(1234), 0
		now := time.Now()
		a := &domain.Attempt{RunID: r.ID, StepID: "classify", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: now, FinishedAt: now,
			Outcome: domain.OutcomeSucceeded, Calls: []domain.ModelCall{
				{Reask: 0, Model: "o3-mini", Request: []byte(`{}`), Outcome: "rejected", At: now, Family: "reasoning",
					ClientRequestID: "pipectl-k-1-0", RequestID: "req_1", ResponseModel: "o3-mini-2025-01-31", ProcessingMS: &ms, ReasoningTokens: &reasoning},
				{Reask: 1, Model: "llama3", Request: []byte(`{}`), Outcome: "accepted", At: now},
			}}
		if err := s.FinishAttempt(ctx, "", a, nil); err != nil {
			t.Fatal(err)
		}
		calls, err := s.ModelCalls(ctx, r.ID)
		if err != nil || len(calls) != 2 {
			t.Fatalf("%v %v", calls, err)
		}
		c := calls[0]
		if c.Family != "reasoning" || c.ClientRequestID != "pipectl-k-1-0" || c.RequestID != "req_1" || c.ResponseModel != "o3-mini-2025-01-31" ||
			c.ProcessingMS == nil || *c.ProcessingMS != 1234 || c.ReasoningTokens == nil || *c.ReasoningTokens != 0 {
			t.Fatalf("first call %+v", c.ModelCall)
		}
		if c := calls[1]; c.ProcessingMS != nil || c.ReasoningTokens != nil || c.RequestID != "" {
			t.Fatalf("unreported figures must stay absent: %+v", c.ModelCall)
		}
	})
}
