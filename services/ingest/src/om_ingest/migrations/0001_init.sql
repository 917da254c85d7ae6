-- ingest owns the system of record: markets, users, trades, signals, and the outbox of events to publish.

CREATE TABLE markets (
    market_id        text PRIMARY KEY,
    question         text NOT NULL,
    category         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('open', 'closed', 'resolved', 'cancelled')),
    created_at       timestamptz NOT NULL,
    close_at         timestamptz NOT NULL,
    current_price    double precision NOT NULL CHECK (current_price BETWEEN 0 AND 1),
    last_trade_at    timestamptz,
    resolution       text CHECK (resolution IN ('YES', 'NO', 'MKT')),
    resolution_price double precision CHECK (resolution_price BETWEEN 0 AND 1),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX markets_status_idx ON markets (status);

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL
);

CREATE TABLE trades (
    trade_id     text PRIMARY KEY,
    market_id    text NOT NULL REFERENCES markets,
    user_id      text NOT NULL REFERENCES users,
    outcome      text NOT NULL CHECK (outcome IN ('YES', 'NO')),
    side         text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    amount       double precision NOT NULL CHECK (amount > 0),
    shares       double precision NOT NULL CHECK (shares > 0),
    price_before double precision NOT NULL CHECK (price_before BETWEEN 0 AND 1),
    price_after  double precision NOT NULL CHECK (price_after BETWEEN 0 AND 1),
    executed_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trades_market_time_idx ON trades (market_id, executed_at);

CREATE TABLE signals (
    signal_id   text PRIMARY KEY,
    market_id   text NOT NULL REFERENCES markets,
    kind        text NOT NULL CHECK (kind IN ('social', 'news')),
    source      text NOT NULL,
    text        text NOT NULL,
    sentiment   double precision CHECK (sentiment BETWEEN -1 AND 1),
    observed_at timestamptz NOT NULL
);
CREATE INDEX signals_market_time_idx ON signals (market_id, observed_at);

-- Events written in the same transaction as the change they describe; the relay publishes and deletes them.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    bytea NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
