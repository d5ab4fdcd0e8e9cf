-- Statistics without joins: each attempt carries its pipeline, and covering indexes let
-- `pipectl stats` count and rank without reading table rows.
ALTER TABLE step_attempts ADD COLUMN pipeline TEXT NOT NULL DEFAULT '';
UPDATE step_attempts SET pipeline = (SELECT pipeline FROM runs WHERE runs.id = step_attempts.run_id);
CREATE INDEX step_attempts_stats ON step_attempts (pipeline, step_id, duration_ms, started_at, attempt, outcome);
CREATE INDEX runs_window ON runs (pipeline, state, created_at, finished_at);
CREATE INDEX runs_latency ON runs (pipeline, (finished_at - created_at), created_at, state) WHERE finished_at > 0;
