package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/pipectl/pipectl/internal/domain"
)

// Text from outside (an error quoting an input, a response body) may hold a NUL character or
// bytes that are not UTF-8, which PostgreSQL refuses in a text column: the run's end must be
// written all the same, on either ledger, with U+FFFD in their place.
func TestTextsEveryLedgerCanStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		run, _, err := s.CreateRun(ctx, newRun(t, "p", "nul"), "test", &domain.Claim{Owner: "w", LeaseUntil: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		att := &domain.Attempt{RunID: run.ID, StepID: "s", ItemIndex: domain.NoItem, Attempt: 1, StepKey: "k", StartedAt: now, FinishedAt: now,
			Outcome: domain.OutcomeFailed, ErrorClass: domain.ClassPermanent, Error: "no such key: a\x00b", Response: []byte("\xff\xfe body"),
			// A model's answer with JSON's \u0000 decoded (found by a review: model calls were
			// written as they came, and the run stayed processing, calling the model again at
			// every takeover).
			Calls: []domain.ModelCall{{Model: "m", Request: []byte(`{}`), Response: "answer a\x00b \xff", Outcome: "invalid_json",
				Error: "invalid character '\x00'", At: now}}}
		ch := &domain.Change{To: domain.StateFailedPermanent, Reason: "dead-lettered: no such key: a\x00b", Actor: "w", Owner: "w",
			ErrorClass: domain.ClassPermanent, Error: "no such key: a\x00b", FailedStep: "s"}
		if err := s.CommitAttempts(ctx, "w", []*domain.Attempt{att}, nil, ch); err != nil {
			t.Fatalf("the end of a run whose error holds a NUL: %v", err)
		}
		got, err := s.GetRun(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		atts, err := s.Attempts(ctx, run.ID)
		if err != nil || len(atts) != 1 {
			t.Fatalf("attempts %v, %v", atts, err)
		}
		if got.State != domain.StateFailedPermanent || got.Error != "no such key: a\uFFFDb" ||
			atts[0].Error != "no such key: a\uFFFDb" || string(atts[0].Response) != "\uFFFD body" {
			t.Fatalf("stored: %s %q / %q %q", got.State, got.Error, atts[0].Error, atts[0].Response)
		}
		calls, err := s.ModelCalls(ctx, run.ID)
		if err != nil || len(calls) != 1 || calls[0].Response != "answer a\uFFFDb \uFFFD" {
			t.Fatalf("model calls %+v, %v", calls, err)
		}
	})
}

// A person's texts (a note, a kill switch's reason) reach the ledger from the API as JSON, where
// \u0000 is a NUL: they are stored like the runs' own texts, not refused by the server with an
// internal error (found by an attack on the API's note endpoint).
func TestPeoplesTextsEveryLedgerCanStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		run, _, err := s.CreateRun(ctx, newRun(t, "p", "note"), "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.AddNote(ctx, run.ID, "ops\x00", "hi \x00 there \xff"); err != nil {
			t.Fatalf("a note with a NUL: %v", err)
		}
		notes, err := s.Notes(ctx, run.ID)
		if err != nil || len(notes) != 1 || notes[0].Text != "hi \uFFFD there \uFFFD" {
			t.Fatalf("notes %+v, %v", notes, err)
		}
		if err := s.SetPipelineDisabled(ctx, "p", true, "stop \x00", "ops"); err != nil {
			t.Fatalf("a kill switch's reason with a NUL: %v", err)
		}
	})
}
