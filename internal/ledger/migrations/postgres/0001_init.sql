-- The PostgreSQL ledger starts at the schema SQLite reached in its migrations 0001 to 0004.
-- Times are Unix milliseconds.
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
    lease_expires_at BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL DEFAULT 0,
    replay_of        TEXT REFERENCES runs(id),
    dry_run          BOOLEAN NOT NULL DEFAULT FALSE,
    error_class      TEXT NOT NULL DEFAULT '',
    error            TEXT NOT NULL DEFAULT '',
    failed_step      TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT NOT NULL DEFAULT 0,
    step_key_base    TEXT NOT NULL DEFAULT '',
    UNIQUE (pipeline, idempotency_key)
);
CREATE INDEX runs_state_due ON runs (state, next_attempt_at);
CREATE INDEX runs_claim ON runs (state, created_at) WHERE state IN ('queued', 'failed_transient', 'processing');
CREATE INDEX runs_pipeline_created ON runs (pipeline, created_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_state_finished ON runs (state, finished_at);
CREATE INDEX runs_window ON runs (pipeline, state, created_at, finished_at);
CREATE INDEX runs_latency ON runs (pipeline, (finished_at - created_at), created_at, state) WHERE finished_at > 0;

CREATE TABLE run_events (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    from_state TEXT NOT NULL DEFAULT '',
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    actor      TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_id, id);

CREATE TABLE step_attempts (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    step_id     TEXT NOT NULL,
    item_index  INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    step_key    TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    outcome     TEXT NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped', 'guarded', 'dry_run', 'abandoned', 'needs_review', 'waiting', 'reused')),
    error_class TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    request     TEXT NOT NULL DEFAULT '',
    response    TEXT NOT NULL DEFAULT '',
    output      TEXT NOT NULL DEFAULT '',
    pipeline    TEXT NOT NULL DEFAULT '',
    UNIQUE (run_id, step_id, item_index, attempt)
);
CREATE INDEX step_attempts_stats ON step_attempts (pipeline, step_id, duration_ms, started_at, attempt, outcome);

CREATE TABLE model_calls (
    id                BIGSERIAL PRIMARY KEY,
    attempt_id        BIGINT NOT NULL REFERENCES step_attempts(id),
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
    latency_ms        BIGINT NOT NULL DEFAULT 0,
    error             TEXT NOT NULL DEFAULT '',
    at                BIGINT NOT NULL
);
CREATE INDEX model_calls_run ON model_calls (run_id, id);

CREATE TABLE notes (
    id     BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    actor  TEXT NOT NULL,
    text   TEXT NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX notes_run ON notes (run_id, id);

CREATE TABLE reviews (
    id            BIGSERIAL PRIMARY KEY,
    run_id        TEXT NOT NULL REFERENCES runs(id),
    step_id       TEXT NOT NULL,
    item_index    INTEGER NOT NULL,
    decision      TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    proposal_hash TEXT NOT NULL DEFAULT '',
    actor         TEXT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    at            BIGINT NOT NULL
);
CREATE INDEX reviews_run ON reviews (run_id, id);

CREATE TABLE pipeline_switches (
    pipeline TEXT PRIMARY KEY,
    disabled BOOLEAN NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    actor    TEXT NOT NULL,
    at       BIGINT NOT NULL
);

CREATE TABLE pipeline_switch_log (
    id       BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    actor    TEXT NOT NULL,
    at       BIGINT NOT NULL
);
