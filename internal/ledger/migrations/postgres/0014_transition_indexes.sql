-- A run's claim and its end each change its state, which is in several indexes of runs, so
-- neither update is HOT: each adds an entry to every index of runs whose predicate the row
-- meets (9 at the claim, 8 at the end before this migration). Two of them serve no query
-- (issue 16):
-- runs_claim (state, created_at) for the claimable states was the claims' index until
-- runs_claimable (0013), which holds the same runs in claim order; claims no longer use it.
-- Its only other reader was `runs list --state queued|processing|failed_transient`, which now
-- walks runs_claimable backward (it holds only those states, newest first by (created_at,
-- id)) or, when the state is rare among them, takes runs_state_due and sorts that state's runs.
-- runs_state_finished (state, finished_at) was in no plan: no query filters or orders by state
-- and finished_at together (the latency walk of stats has runs_latency_real); SQLite dropped it
-- in its migration 0015.
-- EXPLAIN ANALYZE of every ledger query on a 100,000-run ledger, with and without ANALYZE,
-- custom and generic plans, changed no other plan (docs/scaling.md, Throughput).
DROP INDEX IF EXISTS runs_claim;
DROP INDEX IF EXISTS runs_state_finished;
