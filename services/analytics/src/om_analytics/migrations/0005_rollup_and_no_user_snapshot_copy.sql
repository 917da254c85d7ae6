-- Hours and days are rolled up from minute buckets by the leader (store.roll_up) instead of being written by
-- every batch: `rolled_through` is the hour boundary before which 1h and 1d buckets are complete. A trade in an
-- earlier minute (a late trade) is merged into its hour and day directly by its batch, which reads this boundary
-- under the clock row's lock (store.advance_clock), so each trade lands in each period exactly once.
-- NULL: nothing rolled up yet. A database written by the earlier code has its hours and days up to the clock's
-- current hour; its next hour boundary is where the roll-up starts (trades before it go straight to their hour).
ALTER TABLE clock ADD COLUMN rolled_through timestamptz;
UPDATE clock SET rolled_through = date_bin('1 hour', as_of, '1970-01-01 00:00:00+00') + interval '1 hour'
WHERE as_of IS NOT NULL;

-- A user's snapshot went to this column on every round and nothing read it (the API computes a user's metrics
-- afresh, the gateway reads Redis or the topic).
ALTER TABLE users DROP COLUMN snapshot;
