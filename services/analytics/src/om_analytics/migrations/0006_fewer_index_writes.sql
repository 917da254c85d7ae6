-- Fewer index entries written per trade (each new trade inserted a trade id, a minute bucket and a position, each
-- with a B-tree entry only the hourly prune, the roll-up or a market's resolution read):
-- * trades and buckets arrive roughly in event-time order, so a BRIN index (a summary per 128 pages, updated only
--   when a value falls outside its range's summary) serves the prune's and the roll-up's time ranges;
-- * a market's holders (at its resolution) are its participants, keyed by (market_id, user_id) already.
DROP INDEX trades_time_idx;
CREATE INDEX trades_time_brin ON trades USING brin (executed_at);
DROP INDEX buckets_prune_idx;
CREATE INDEX buckets_start_brin ON buckets USING brin (start);
DROP INDEX positions_market_idx;
