-- feature keeps market state in memory and checkpoints it here: each market's state and the offsets consumed,
-- saved in one transaction. Resolutions feed the category history and the training export.
-- The per-event tables of the first design (row state, participants, processed event ids) are replaced.

DROP TABLE IF EXISTS market_state;
DROP TABLE IF EXISTS participants;
DROP TABLE IF EXISTS processed_events;

CREATE TABLE market_checkpoint (
    market_id  text PRIMARY KEY,
    partition  integer NOT NULL,
    state      bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX market_checkpoint_partition_idx ON market_checkpoint (partition);

CREATE TABLE checkpoint_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- One row per resolved market (cancelled markets have no outcome): the category history and the export's labels.
CREATE TABLE market_outcomes (
    market_id        text PRIMARY KEY,
    category         text NOT NULL,
    created_at       timestamptz,
    close_at         timestamptz,
    closed_at        timestamptz,
    resolved_at      timestamptz NOT NULL,
    resolution       text NOT NULL,
    resolution_price double precision NOT NULL,
    final_price      double precision NOT NULL
);
CREATE INDEX market_outcomes_resolved_idx ON market_outcomes (resolved_at, market_id);
