-- The ids of the trades and signals each partition applied, one row per partition per checkpoint (64-bit keys,
-- packed), kept for the dedupe window: after the broker lost its log, events it gets again are applied only if
-- they are not here. Replaces the per-market ids of the grace period that were part of each market's state.

CREATE TABLE applied_ids (
    partition integer     NOT NULL,
    saved_at  timestamptz NOT NULL,
    ids       bytea       NOT NULL
);
CREATE INDEX applied_ids_partition_idx ON applied_ids (partition, saved_at);
CREATE INDEX applied_ids_saved_idx ON applied_ids (saved_at);
