-- Two indexes no query uses any more, each kept up to date on every write (issue 16):
-- runs_latency, superseded by runs_latency_real (0011), which the latency walk of stats names;
-- step_attempts_step (step_id, started_at), superseded by step_attempts_stats (0004), which
-- every attempt query filtering or ordering by step uses (runs are found by run_id through the
-- unique index). It cost a leaf page of its own per attempt of a run, each step id landing on a
-- different page. EXPLAIN QUERY PLAN of every ledger query is the same without them.
DROP INDEX IF EXISTS runs_latency;
DROP INDEX IF EXISTS step_attempts_step;
