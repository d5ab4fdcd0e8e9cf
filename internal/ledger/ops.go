package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/pipectl/pipectl/internal/domain"
)

const pipelineSwitchSQL = `SELECT disabled, reason, actor FROM pipeline_switches WHERE pipeline = ?`

// PipelineDisabled reports whether a pipeline's kill switch is thrown, and why.
func (s *Store) PipelineDisabled(ctx context.Context, pipeline string) (bool, string, error) {
	var row struct {
		Disabled bool   `db:"disabled"`
		Reason   string `db:"reason"`
		Actor    string `db:"actor"`
	}
	var err error
	if st := s.stmts[pipelineSwitchSQL]; st != nil {
		// Every run asks before it starts.
		err = st.GetContext(ctx, &row, pipeline)
	} else {
		err = s.db.GetContext(ctx, &row, s.db.Rebind(pipelineSwitchSQL), pipeline)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	if !row.Disabled {
		return false, "", nil
	}
	return true, fmt.Sprintf("%s, by %s", row.Reason, row.Actor), nil
}

// SetPipelineDisabled throws or resets a pipeline's kill switch and logs who did it and why.
func (s *Store) SetPipelineDisabled(ctx context.Context, pipeline string, disabled bool, reason, actor string) error {
	now := ms(s.now())
	reason, actor = storable(reason), storable(actor)
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO pipeline_switches (pipeline, disabled, reason, actor, at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (pipeline) DO UPDATE SET disabled = excluded.disabled, reason = excluded.reason, actor = excluded.actor, at = excluded.at`),
			pipeline, disabled, reason, actor, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO pipeline_switch_log (pipeline, disabled, reason, actor, at) VALUES (?, ?, ?, ?, ?)`),
			pipeline, disabled, reason, actor, now)
		return err
	})
}

// Switch is one toggle of a kill switch.
type Switch struct {
	Pipeline string    `db:"pipeline" json:"pipeline"`
	Disabled bool      `db:"disabled" json:"disabled"`
	Reason   string    `db:"reason" json:"reason"`
	Actor    string    `db:"actor" json:"actor"`
	AtMS     int64     `db:"at" json:"-"`
	At       time.Time `db:"-" json:"at"`
}

// SwitchLog returns every toggle of a pipeline's kill switch, oldest first.
func (s *Store) SwitchLog(ctx context.Context, pipeline string) ([]Switch, error) {
	var rows []Switch
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT pipeline, disabled, reason, actor, at FROM pipeline_switch_log WHERE pipeline = ? ORDER BY id`), pipeline); err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].At = fromMS(rows[i].AtMS)
	}
	return rows, nil
}

// Decision is an operator's answer to a paused run: a review or a signal. It is written with
// the step's completing attempt and the run's transition in one commit.
type Decision struct {
	RunID string
	// Attempt completes (or, rejected, closes) the paused step.
	Attempt *domain.Attempt
	Change  domain.Change
	// Review, when set, records the review decision.
	Review *Review
}

// Review is a recorded decision on a run in needs_review.
type Review struct {
	StepID       string
	ItemIndex    int
	Decision     string // approved or rejected
	ProposalHash string
	Actor        string
	Note         string
}

// Decide applies an operator's decision atomically: the step's attempt, the review row and
// the transition; it fails, writing nothing, when the run is no longer in the state the
// change leaves.
func (s *Store) Decide(ctx context.Context, d Decision) error {
	return s.runTx(ctx, d.RunID, func(tx *sqlx.Tx) error {
		if err := s.transitionTx(ctx, tx, d.RunID, d.Change); err != nil {
			return err
		}
		if d.Attempt != nil {
			if err := s.insertAttempt(ctx, tx, d.Attempt); err != nil {
				return err
			}
		}
		if r := d.Review; r != nil {
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO reviews (run_id, step_id, item_index, decision, proposal_hash, actor, note, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
				d.RunID, r.StepID, r.ItemIndex, r.Decision, r.ProposalHash, storable(r.Actor), storable(r.Note), ms(s.now())); err != nil {
				return err
			}
		}
		return nil
	})
}

// ExpireWaits moves runs whose wait deadline passed to failed_permanent, each in its own
// commit, and returns how many it moved.
func (s *Store) ExpireWaits(ctx context.Context, actor string) (int, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, s.db.Rebind(`SELECT id FROM runs WHERE state = 'waiting_external' AND next_attempt_at > 0 AND next_attempt_at <= ?`), ms(s.now())); err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		var step string
		_ = s.db.GetContext(ctx, &step, s.db.Rebind(`SELECT step_id FROM step_attempts WHERE run_id = ? AND outcome = 'waiting' ORDER BY id DESC LIMIT 1`), id)
		err := s.Transition(ctx, id, domain.Change{To: domain.StateFailedPermanent, Reason: "wait timed out", Actor: actor,
			ErrorClass: domain.ClassPermanent, Error: "the wait step's timeout passed without a signal", FailedStep: step})
		if err == nil {
			n++
		} else if !errors.Is(err, domain.ErrStateConflict) {
			return n, err
		}
	}
	return n, nil
}

// PipelineRow is what the ledger knows of one pipeline: its kill switch (zero when never
// thrown) and its newest run.
type PipelineRow struct {
	Name string `db:"pipeline"`
	// Switched says the kill switch was ever toggled; Disabled, Reason, Actor and At are its
	// current position.
	Switched bool      `db:"switched"`
	Disabled bool      `db:"disabled"`
	Reason   string    `db:"reason"`
	Actor    string    `db:"actor"`
	AtMS     int64     `db:"at"`
	At       time.Time `db:"-"`
	// LastRunMS and LastRunID are the newest run's creation time and id (zero without runs).
	LastRunMS int64     `db:"last_run"`
	LastRun   time.Time `db:"-"`
	LastRunID string    `db:"last_run_id"`
	// SpecText and SpecPath are the newest run's spec, to read the pipeline's triggers from.
	SpecText string `db:"spec_text"`
	SpecPath string `db:"spec_path"`
}

// Pipelines lists every pipeline the ledger knows (one that has a run or a kill switch), by
// name. The newest run of each is found through the (pipeline, created_at) index.
func (s *Store) Pipelines(ctx context.Context) ([]PipelineRow, error) {
	db, err := s.readers()
	if err != nil {
		return nil, err
	}
	var rows []PipelineRow
	err = db.SelectContext(ctx, &rows, `
		SELECT n.pipeline,
			sw.pipeline IS NOT NULL AS switched,
			COALESCE(sw.disabled, FALSE) AS disabled, COALESCE(sw.reason, '') AS reason,
			COALESCE(sw.actor, '') AS actor, COALESCE(sw.at, 0) AS at,
			COALESCE(r.created_at, 0) AS last_run, COALESCE(r.id, '') AS last_run_id,
			COALESCE(r.spec_text, '') AS spec_text, COALESCE(r.spec_path, '') AS spec_path
		FROM (SELECT DISTINCT pipeline FROM runs UNION SELECT pipeline FROM pipeline_switches) n
		LEFT JOIN pipeline_switches sw ON sw.pipeline = n.pipeline
		LEFT JOIN runs r ON r.id = (SELECT id FROM runs WHERE pipeline = n.pipeline ORDER BY created_at DESC, id DESC LIMIT 1)
		ORDER BY n.pipeline`)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].At = fromMS(rows[i].AtMS)
		rows[i].LastRun = fromMS(rows[i].LastRunMS)
	}
	return rows, nil
}

// SwitchHistory returns every toggle of every kill switch (or one pipeline's), newest first.
func (s *Store) SwitchHistory(ctx context.Context, pipeline string, limit int) ([]Switch, error) {
	q, args := `SELECT pipeline, disabled, reason, actor, at FROM pipeline_switch_log`, []any{}
	if pipeline != "" {
		q, args = q+` WHERE pipeline = ?`, append(args, pipeline)
	}
	q += ` ORDER BY id DESC`
	if limit > 0 {
		q, args = q+` LIMIT ?`, append(args, limit)
	}
	var rows []Switch
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].At = fromMS(rows[i].AtMS)
	}
	return rows, nil
}
