-- The latest feature vector of each open market (to re-score after a model swap and to make a final
-- prediction at resolution), and each settled market's last prediction against its outcome (live accuracy).

CREATE TABLE latest_vectors (
    market_id       text PRIMARY KEY,
    features        jsonb NOT NULL,
    as_of           timestamptz NOT NULL,
    source_event_id text NOT NULL
);

CREATE TABLE live_outcomes (
    market_id     text PRIMARY KEY,
    model_version text NOT NULL,
    probability   double precision NOT NULL,
    market_price  double precision NOT NULL,
    outcome       double precision NOT NULL,
    settled_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE predictions ADD COLUMN risk_reasons jsonb NOT NULL DEFAULT '[]';
ALTER TABLE predictions ADD COLUMN final boolean NOT NULL DEFAULT false;
ALTER TABLE predictions ADD COLUMN market_price double precision;
