-- runs_latency is superseded by runs_latency_real (0011), whose predicate the latency walk of
-- stats repeats; no query uses it, and every run's final update maintained it (issue 16).
-- (The SQLite ledger also drops step_attempts_step, which PostgreSQL never had.)
DROP INDEX IF EXISTS runs_latency;
