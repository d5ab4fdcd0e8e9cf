-- Model calls, and the needs_review outcome of attempts. SQLite cannot change a CHECK
-- constraint in place, so step_attempts is rebuilt with its rows.
CREATE TABLE step_attempts_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    step_id     TEXT NOT NULL,
    item_index  INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    step_key    TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'guarded', 'dry_run', 'abandoned', 'needs_review')),
    error_class TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    request     TEXT NOT NULL DEFAULT '',
    response    TEXT NOT NULL DEFAULT '',
    output      TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, step_id, item_index, attempt)
);
INSERT INTO step_attempts_v2 SELECT * FROM step_attempts;
DROP TABLE step_attempts;
ALTER TABLE step_attempts_v2 RENAME TO step_attempts;

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
CREATE INDEX model_calls_run ON model_calls (run_id, id);
