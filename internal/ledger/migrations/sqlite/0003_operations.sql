-- Operator controls: the waiting outcome, the step key base of replays, review decisions and
-- the kill switch. step_attempts is rebuilt for its CHECK constraint, as in 0002.
CREATE TABLE step_attempts_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    step_id     TEXT NOT NULL,
    item_index  INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    step_key    TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'guarded', 'dry_run', 'abandoned', 'needs_review', 'waiting', 'reused')),
    error_class TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    request     TEXT NOT NULL DEFAULT '',
    response    TEXT NOT NULL DEFAULT '',
    output      TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, step_id, item_index, attempt)
);
INSERT INTO step_attempts_v3 SELECT * FROM step_attempts;
CREATE TABLE model_calls_v3 AS SELECT * FROM model_calls;
DROP TABLE model_calls;
DROP TABLE step_attempts;
ALTER TABLE step_attempts_v3 RENAME TO step_attempts;
CREATE INDEX step_attempts_step ON step_attempts (step_id, started_at);

CREATE TABLE model_calls (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    attempt_id        INTEGER NOT NULL REFERENCES step_attempts(id),
    run_id            TEXT NOT NULL REFERENCES runs(id),
    step_id           TEXT NOT NULL,
    reask             INTEGER NOT NULL,
    provider          TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL,
    request           TEXT NOT NULL,
    response          TEXT NOT NULL DEFAULT '',
    parsed            TEXT NOT NULL DEFAULT '',
    finish_reason     TEXT NOT NULL DEFAULT '',
    outcome           TEXT NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'review', 'refused', 'truncated', 'filtered', 'invalid_json', 'error')),
    verdict           TEXT NOT NULL DEFAULT '',
    reasons           TEXT NOT NULL DEFAULT '',
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    error             TEXT NOT NULL DEFAULT '',
    at                INTEGER NOT NULL
);
INSERT INTO model_calls SELECT * FROM model_calls_v3;
DROP TABLE model_calls_v3;
CREATE INDEX model_calls_run ON model_calls (run_id, id);

-- Step keys of a replay are those of the run it replays, so that side effects already applied
-- are deduplicated by their targets.
ALTER TABLE runs ADD COLUMN step_key_base TEXT NOT NULL DEFAULT '';
CREATE INDEX runs_state_finished ON runs (state, finished_at);

CREATE TABLE reviews (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs(id),
    step_id       TEXT NOT NULL,
    item_index    INTEGER NOT NULL,
    decision      TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    proposal_hash TEXT NOT NULL DEFAULT '',
    actor         TEXT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    at            INTEGER NOT NULL
);
CREATE INDEX reviews_run ON reviews (run_id, id);

CREATE TABLE pipeline_switches (
    pipeline TEXT PRIMARY KEY,
    disabled INTEGER NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL
);

CREATE TABLE pipeline_switch_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL
);
