-- feature owns each market's streaming state and the point-in-time snapshots of its feature vectors.

CREATE TABLE market_state (
    market_id  text PRIMARY KEY,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    market_id text NOT NULL,
    user_id   text NOT NULL,
    PRIMARY KEY (market_id, user_id)
);

-- What the model would have seen at each moment: the training set for later, free of look-ahead.
CREATE TABLE feature_snapshots (
    event_id        text PRIMARY KEY,
    market_id       text NOT NULL,
    as_of           timestamptz NOT NULL,
    source_event_id text NOT NULL,
    features        jsonb NOT NULL
);
CREATE INDEX feature_snapshots_market_time_idx ON feature_snapshots (market_id, as_of);

CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
