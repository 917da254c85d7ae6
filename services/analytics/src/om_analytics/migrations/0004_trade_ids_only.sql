-- `trades` only deduplicates trades by id (a trade published again under a new event id counts once): nothing
-- reads its other columns (windows, candles and price history read buckets; positions hold side, outcome and
-- shares; ingest is the system of record), so each trade now writes an id and its time (for retention) only.
ALTER TABLE trades
    DROP COLUMN market_id,
    DROP COLUMN user_id,
    DROP COLUMN amount,
    DROP COLUMN price_after,
    DROP COLUMN side,
    DROP COLUMN outcome,
    DROP COLUMN shares,
    DROP COLUMN price_before;
