-- Trades imported from history may carry an estimated amount; requests may carry an Idempotency-Key.

ALTER TABLE trades ADD COLUMN amount_estimated boolean NOT NULL DEFAULT false;

-- One row per Idempotency-Key: written in the transaction of the write it names, with that write's reply.
CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text NOT NULL,  -- sha256 of method, path and the parsed body
    status      integer,
    body        jsonb,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
