-- runs_claimable (0013) held the runs of all three states a claim can take, the runs in flight
-- (processing) among them, at the head of the index: every claim moved a run from queued to
-- processing within that index, so the first leaves of it changed at every claim. Two workers
-- claiming at once then kept invalidating each other's page reads, and marking the dead entries
-- of claimed runs (which every claim does as it walks past them) fell back to searching each
-- leaf item by item: 9% of the server's CPU in a drain by two workers (issue 16, sixth pass).
-- The claim now reads two indexes: runs ready to start (queued, and retries, due or not) in
-- claim order, which a claim only leaves; and runs in flight by lease expiry, of which a claim
-- reads only those whose lease ran out. A run enters one of them at each change of state, as
-- it entered runs_claimable.
-- The price: a lease renewal changes lease_expires_at, which runs_leases now holds, so it is no
-- longer a HOT update (rewritten in place, no index entry) but adds an entry to every index of
-- runs, once per run every third of its lease (10 s by default) while a step lasts. Keyed on
-- (created_at, id) instead, renewals stayed HOT, but every claim then read every run in flight
-- to find the expired ones: a drain by two workers cost the server 10-35% more (alternated
-- pairs). Claims come many times a second on a busy ledger; renewals only for long steps.
CREATE INDEX IF NOT EXISTS runs_ready ON runs (created_at, id) WHERE state IN ('queued', 'failed_transient');
CREATE INDEX IF NOT EXISTS runs_leases ON runs (lease_expires_at) WHERE state = 'processing';
DROP INDEX IF EXISTS runs_claimable;
