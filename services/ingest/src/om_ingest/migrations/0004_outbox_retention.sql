-- Published events stay in the outbox for a retention window (published_at set) instead of being deleted at once,
-- so that a broker which lost its log (the embedded one keeps it in memory) can be given them again.

ALTER TABLE outbox ADD COLUMN published_at timestamptz;
DROP INDEX outbox_slot_id_idx;
-- What the relay reads: unpublished rows per slot, in id order.
CREATE INDEX outbox_pending_idx ON outbox (slot, id) WHERE published_at IS NULL;
-- What the retention prune and the re-publish read.
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
