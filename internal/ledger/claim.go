package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

// NotifyChannel is the PostgreSQL channel new queued runs are announced on.
const NotifyChannel = "pipectl_runs"

// ClaimNext takes one due run for owner: the oldest queued run, a failed_transient run whose
// retry is due, or a processing run whose lease expired (taken over: attempts it left running
// become abandoned). Disabled pipelines are skipped. It returns nil when nothing is due.
// PostgreSQL workers skip rows other workers are claiming (FOR UPDATE SKIP LOCKED); SQLite
// serialises claims on its write lock.
func (s *Store) ClaimNext(ctx context.Context, owner string, until time.Time, f domain.ClaimFilter) (*domain.Run, error) {
	var claimed *domain.Run
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		now := ms(s.now())
		q := `SELECT id, state, lease_owner, pipeline FROM runs
			WHERE (state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ?) OR (state = 'processing' AND lease_expires_at < ?))
			AND pipeline NOT IN (SELECT pipeline FROM pipeline_switches WHERE disabled = ?)`
		args := []any{now, now, true}
		if len(f.Pipelines) > 0 {
			q += ` AND pipeline IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Pipelines)), ", ") + `)`
			for _, p := range f.Pipelines {
				args = append(args, p)
			}
		}
		if f.MaxPerPipeline > 0 {
			q += ` AND (SELECT COUNT(*) FROM runs busy WHERE busy.pipeline = runs.pipeline AND busy.state = 'processing' AND busy.lease_expires_at >= ?) < ?`
			args = append(args, now, f.MaxPerPipeline)
		}
		// Run ids sort by creation time too: they break ties within a millisecond, so that the
		// order is the same on every ledger and every call.
		q += ` ORDER BY created_at, id LIMIT 1`
		if s.dialect == "postgres" {
			q += ` FOR UPDATE SKIP LOCKED`
		}
		var cand struct {
			ID       string `db:"id"`
			State    string `db:"state"`
			Owner    string `db:"lease_owner"`
			Pipeline string `db:"pipeline"`
		}
		if err := tx.GetContext(ctx, &cand, s.db.Rebind(q), args...); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		}
		if f.MaxPerPipeline > 0 && s.dialect == "postgres" {
			// Two workers may pick runs of one pipeline at once: recount under a lock per
			// pipeline, so the cap holds across machines.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, cand.Pipeline); err != nil {
				return err
			}
			var busy int
			if err := tx.GetContext(ctx, &busy, `SELECT COUNT(*) FROM runs WHERE pipeline = $1 AND state = 'processing' AND lease_expires_at >= $2 AND id <> $3`, cand.Pipeline, now, cand.ID); err != nil {
				return err
			}
			if busy >= f.MaxPerPipeline {
				return nil
			}
		}
		if cand.State == string(domain.StateProcessing) {
			err := s.takeOverTx(ctx, tx, cand.ID, cand.Owner, owner, until, fmt.Sprintf("taken over from %s (lease expired) by %s", cand.Owner, owner), owner,
				"the process running this attempt stopped renewing its lease")
			if errors.Is(err, domain.ErrLeaseLost) {
				return nil // another worker took it first
			}
			if err != nil {
				return err
			}
		} else if err := s.transitionTx(ctx, tx, cand.ID, domain.Change{To: domain.StateProcessing, Reason: "claimed by " + owner, Actor: owner, LeaseOwner: owner, LeaseUntil: until}); err != nil {
			return err
		}
		r, err := s.getRun(ctx, tx, cand.ID)
		claimed = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return claimed, nil
}

// QueueDepth counts runs waiting for a worker: queued, and retries already due.
// PausedRuns counts the runs waiting for a person (needs_review) and for a signal
// (waiting_external); states with none are absent from the map.
func (s *Store) PausedRuns(ctx context.Context) (map[domain.RunState]int, error) {
	var rows []struct {
		State string `db:"state"`
		N     int    `db:"n"`
	}
	err := s.db.SelectContext(ctx, &rows, `SELECT state, COUNT(*) AS n FROM runs WHERE state IN ('needs_review', 'waiting_external') GROUP BY state`)
	if err != nil {
		return nil, err
	}
	out := make(map[domain.RunState]int, len(rows))
	for _, r := range rows {
		out[domain.RunState(r.State)] = r.N
	}
	return out, nil
}

func (s *Store) QueueDepth(ctx context.Context) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, s.db.Rebind(`SELECT COUNT(*) FROM runs WHERE state = 'queued' OR (state = 'failed_transient' AND next_attempt_at <= ?)`), ms(s.now()))
	return n, err
}
