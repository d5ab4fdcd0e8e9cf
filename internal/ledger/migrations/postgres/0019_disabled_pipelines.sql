-- The claims' connections plan with sequential scans off (openClaimPool): each claim's generic
-- plan is made once per connection, and one made while step_attempts was empty read it whole
-- for every run it locked. A claim's list of switched-off pipelines then needs an index of its
-- own: with no index path, its sequential scan kept the penalty of a disabled plan, ten billion
-- in cost, and every plan that contained it cost that much, too alike for the planner to tell
-- the others apart (it read the expired leases in runs_created instead of runs_leases).
CREATE INDEX IF NOT EXISTS pipeline_switches_disabled ON pipeline_switches (pipeline) WHERE disabled;
