-- runs_claimable (0013) held the runs of all three states a claim can take, the runs in flight
-- (processing) among them, at the head of the index: every claim moved a run from queued to
-- processing within that index, so the first leaves of it changed at every claim. Two workers
-- claiming at once then kept invalidating each other's page reads, and marking the dead entries
-- of claimed runs (which every claim does as it walks past them) fell back to searching each
-- leaf item by item: 9% of the server's CPU in a drain by two workers (issue 16, sixth pass).
-- The claim now reads two indexes: runs ready to start (queued, and retries, due or not) in
-- claim order, which a claim only leaves; and runs in flight, in claim order too, of which a
-- claim takes those whose lease ran out. A run enters one of them at each change of state, as
-- it entered runs_claimable. runs_leases is not keyed on lease_expires_at: a lease renewal
-- changes only that column, and no index may hold it if renewals are to stay HOT updates
-- (a review found them all non-HOT with such a key).
CREATE INDEX IF NOT EXISTS runs_ready ON runs (created_at, id) WHERE state IN ('queued', 'failed_transient');
CREATE INDEX IF NOT EXISTS runs_leases ON runs (created_at, id) WHERE state = 'processing';
DROP INDEX IF EXISTS runs_claimable;
