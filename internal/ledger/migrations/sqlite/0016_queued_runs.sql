-- The claim's candidates in claim order without reading the whole queue (issue 16). Without it
-- SQLite found the due runs through runs_state_due and sorted every one of them by creation
-- time at each claim: 0.6 ms with 1,000 runs queued, 44 ms with 100,000, so that draining a
-- large backfill slowed as it went. The claim walks this index for its queued branch (INDEXED
-- BY) and stops after as many runs as it takes. Only queued runs are in it: a run created by
-- `pipectl run` starts claimed and never enters it, and a claimed run leaves it.
CREATE INDEX IF NOT EXISTS runs_queued ON runs (created_at, id) WHERE state = 'queued';
