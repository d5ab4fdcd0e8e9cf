-- Claims look for the oldest run a worker may take: queued, a retry that is due, or a lease
-- that ran out. Walking runs_created for them reads every finished run older than the oldest
-- live one, so a claim cost more the longer a queue had been draining (issue 16). This index
-- holds only the runs in the three states a claim can take, in claim order; runs leave it
-- when they end.
CREATE INDEX IF NOT EXISTS runs_claimable ON runs (created_at, id) WHERE state IN ('queued', 'failed_transient', 'processing');
