-- The outbox is published by several relay loops at once: each row's slot (a hash of its Kafka key, so one
-- market's events share it) says which one; a slot is published by one transaction at a time, in id order.

ALTER TABLE outbox ADD COLUMN slot smallint NOT NULL DEFAULT 0;
UPDATE outbox SET slot = hashtext(key) & 63;
ALTER TABLE outbox ALTER COLUMN slot DROP DEFAULT;
CREATE INDEX outbox_slot_id_idx ON outbox (slot, id);
