-- prediction owns its prediction history (and, later, the model registry).

CREATE TABLE predictions (
    event_id       text PRIMARY KEY,
    market_id      text NOT NULL,
    probability    double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    confidence     double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    risk_level     text NOT NULL,
    model_version  text NOT NULL,
    contributions  jsonb NOT NULL,
    features_as_of timestamptz NOT NULL,
    made_at        timestamptz NOT NULL
);
CREATE INDEX predictions_market_time_idx ON predictions (market_id, features_as_of DESC);

CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
