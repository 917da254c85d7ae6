-- Issue 7: trades keep side, outcome and shares; per-period buckets (1m, 1h, 1d) replace scans of trades;
-- positions and user totals for P&L; a clock (latest event time); snapshots that the hot read models mirror.

ALTER TABLE trades
    ADD COLUMN side text NOT NULL DEFAULT 'BUY',
    ADD COLUMN outcome text NOT NULL DEFAULT 'YES',
    ADD COLUMN shares double precision NOT NULL DEFAULT 0,
    ADD COLUMN price_before double precision;

ALTER TABLE markets
    ADD COLUMN last_trade_id text,
    ADD COLUMN resolution text,
    ADD COLUMN resolution_price double precision,
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN prediction jsonb,
    ADD COLUMN volume_24h double precision NOT NULL DEFAULT 0,
    ADD COLUMN liquidity double precision NOT NULL DEFAULT 0,
    ADD COLUMN last_event_at timestamptz,
    ADD COLUMN snapshot jsonb,
    ADD COLUMN snapshot_as_of timestamptz,
    ADD COLUMN dirty boolean NOT NULL DEFAULT false;  -- changed since its snapshot
CREATE INDEX markets_dirty_idx ON markets (market_id) WHERE dirty;
CREATE INDEX markets_category_close_idx ON markets (category, close_at);
CREATE INDEX markets_volume_24h_idx ON markets (volume_24h DESC, market_id);
CREATE INDEX markets_refresh_idx ON markets (last_event_at);

-- One row per market, resolution and period: OHLC chosen by (event time, trade id), sums added.
CREATE TABLE buckets (
    market_id     text NOT NULL,
    resolution    text NOT NULL,  -- 1m, 1h, 1d
    start         timestamptz NOT NULL,
    open          double precision,
    open_at       timestamptz,
    open_id       text,
    high          double precision,
    low           double precision,
    close         double precision,
    close_at      timestamptz,
    close_id      text,
    volume        double precision NOT NULL DEFAULT 0,
    trades        integer NOT NULL DEFAULT 0,
    price_volume  double precision NOT NULL DEFAULT 0,
    abs_move      double precision NOT NULL DEFAULT 0,
    social        integer NOT NULL DEFAULT 0,
    news          integer NOT NULL DEFAULT 0,
    sentiment_sum double precision NOT NULL DEFAULT 0,
    sentiment_n   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (market_id, resolution, start)
);
CREATE INDEX buckets_prune_idx ON buckets (resolution, start);

CREATE TABLE platform_minutes (
    start  timestamptz PRIMARY KEY,
    volume double precision NOT NULL DEFAULT 0,
    trades integer NOT NULL DEFAULT 0
);

ALTER TABLE participants ADD COLUMN last_trade_at timestamptz;
CREATE INDEX participants_active_idx ON participants (market_id, last_trade_at);

ALTER TABLE users
    ADD COLUMN total_trades integer NOT NULL DEFAULT 0,
    ADD COLUMN total_volume double precision NOT NULL DEFAULT 0,
    ADD COLUMN settled_pnl double precision NOT NULL DEFAULT 0,
    ADD COLUMN resolved_positions integer NOT NULL DEFAULT 0,
    ADD COLUMN winning_positions integer NOT NULL DEFAULT 0,
    ADD COLUMN snapshot jsonb,
    ADD COLUMN dirty boolean NOT NULL DEFAULT false;
CREATE INDEX users_dirty_idx ON users (user_id) WHERE dirty;

CREATE TABLE positions (
    user_id       text NOT NULL,
    market_id     text NOT NULL,
    outcome       text NOT NULL,
    buy_shares    double precision NOT NULL DEFAULT 0,
    buy_cost      double precision NOT NULL DEFAULT 0,
    sell_shares   double precision NOT NULL DEFAULT 0,
    sell_proceeds double precision NOT NULL DEFAULT 0,
    trades        integer NOT NULL DEFAULT 0,
    settled       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, market_id, outcome)
);
CREATE INDEX positions_market_idx ON positions (market_id);
CREATE INDEX positions_open_idx ON positions (user_id) WHERE NOT settled;

-- A user's result in each market that ended, so a late trade changes the user's totals by the difference.
CREATE TABLE settlements (
    user_id   text NOT NULL,
    market_id text NOT NULL,
    pnl       double precision NOT NULL,
    counted   boolean NOT NULL,
    won       boolean NOT NULL,
    PRIMARY KEY (user_id, market_id)
);

CREATE TABLE user_categories (
    user_id  text NOT NULL,
    category text NOT NULL,
    volume   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, category)
);

-- The latest event time seen: where every rolling window ends.
CREATE TABLE clock (
    id    integer PRIMARY KEY CHECK (id = 1),
    as_of timestamptz
);
INSERT INTO clock (id, as_of) VALUES (1, NULL);
