package ledger

import (
	"context"
	"fmt"
	"testing"

	"github.com/pipectl/pipectl/internal/domain"
)

func TestPausedRunsCountsReviewsAndWaits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		got, err := s.PausedRuns(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("empty ledger: %v %v", got, err)
		}
		states := []domain.RunState{domain.StateNeedsReview, domain.StateNeedsReview, domain.StateWaitingExternal,
			domain.StateQueued, domain.StateSucceeded, domain.StateFailedPermanent, domain.StateProcessing}
		for i, st := range states {
			r, _, err := s.CreateRun(ctx, newRun(t, "p", fmt.Sprintf("k%d", i)), "a", nil)
			if err != nil {
				t.Fatal(err)
			}
			force(t, s, r.ID, st, "")
		}
		got, err = s.PausedRuns(ctx)
		if err != nil || len(got) != 2 || got[domain.StateNeedsReview] != 2 || got[domain.StateWaitingExternal] != 1 {
			t.Fatalf("paused: %v %v", got, err)
		}
	})
}
