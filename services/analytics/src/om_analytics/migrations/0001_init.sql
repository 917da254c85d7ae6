-- analytics owns its read models of markets, trades and users, built from the public topics.

CREATE TABLE markets (
    market_id             text PRIMARY KEY,
    status                text NOT NULL DEFAULT 'open',
    category              text,
    created_at            timestamptz,
    close_at              timestamptz,
    opening_price         double precision,
    current_price         double precision,  -- unknown until the market's creation or a trade is seen
    last_trade_at         timestamptz,
    total_volume          double precision NOT NULL DEFAULT 0,
    trade_count           integer NOT NULL DEFAULT 0,
    participant_count     integer NOT NULL DEFAULT 0,
    predicted_probability double precision,
    model_version         text,
    predicted_as_of       timestamptz
);
CREATE INDEX markets_status_idx ON markets (status);

CREATE TABLE trades (
    trade_id    text PRIMARY KEY,
    market_id   text NOT NULL,
    user_id     text NOT NULL,
    amount      double precision NOT NULL,
    price_after double precision NOT NULL,
    executed_at timestamptz NOT NULL
);
CREATE INDEX trades_time_idx ON trades (executed_at);
CREATE INDEX trades_market_time_idx ON trades (market_id, executed_at);

CREATE TABLE participants (
    market_id text NOT NULL,
    user_id   text NOT NULL,
    PRIMARY KEY (market_id, user_id)
);

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL,
    last_trade_at timestamptz NOT NULL
);
CREATE INDEX users_last_trade_idx ON users (last_trade_at);

CREATE TABLE processed_events (
    event_id     text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
