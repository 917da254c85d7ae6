-- A market's final prediction (prediction emits one at resolution, `final: true`) outranks every other, so
-- calibration and accuracy score what the model said last, whatever the order its predictions arrive in.
ALTER TABLE markets ADD COLUMN prediction_final boolean NOT NULL DEFAULT false;

-- Nothing reads trades by market (windows read buckets): the index only cost every insert.
DROP INDEX IF EXISTS trades_market_time_idx;
