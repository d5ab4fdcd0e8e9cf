-- Runs, their transitions, step attempts and operator notes. Times are Unix milliseconds.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    pipeline         TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    input_hash       TEXT NOT NULL,
    input            TEXT NOT NULL,
    spec_text        TEXT NOT NULL,
    spec_hash        TEXT NOT NULL,
    spec_path        TEXT NOT NULL DEFAULT '',
    pipectl_version  TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'processing', 'succeeded', 'failed_transient', 'failed_permanent', 'waiting_external', 'needs_review')),
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_expires_at INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    replay_of        TEXT REFERENCES runs(id),
    dry_run          INTEGER NOT NULL DEFAULT 0,
    error_class      TEXT NOT NULL DEFAULT '',
    error            TEXT NOT NULL DEFAULT '',
    failed_step      TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (pipeline, idempotency_key)
);
CREATE INDEX runs_state_due ON runs (state, next_attempt_at);
CREATE INDEX runs_pipeline_created ON runs (pipeline, created_at);
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE run_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    from_state TEXT NOT NULL DEFAULT '',
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE step_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    step_id     TEXT NOT NULL,
    item_index  INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    step_key    TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'guarded', 'dry_run', 'abandoned')),
    error_class TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    request     TEXT NOT NULL DEFAULT '',
    response    TEXT NOT NULL DEFAULT '',
    output      TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, step_id, item_index, attempt)
);

CREATE TABLE notes (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    actor  TEXT NOT NULL,
    text   TEXT NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX notes_run ON notes (run_id, id);
