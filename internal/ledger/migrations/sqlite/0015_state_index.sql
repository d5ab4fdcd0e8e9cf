-- runs_state_finished (state, finished_at) duplicates runs_state_due (state, next_attempt_at) for
-- every query that uses it: no query orders or filters by state and finished_at together (the
-- latency walk of stats has runs_latency_real), and a lookup by state alone is served by either
-- (issue 16). A run's insert and its final update each rewrote a leaf of it: about 3.6 of the
-- 44 WAL pages a 10-step run writes. EXPLAIN QUERY PLAN of every ledger query, on a 20,000-run
-- ledger with and without ANALYZE, finds runs_state_due where it found runs_state_finished.
DROP INDEX IF EXISTS runs_state_finished;
