-- One index entry fewer per new position: a market's holders (read at its resolution) are its participants,
-- keyed by (market_id, user_id) already, so positions need no index by market.
DROP INDEX positions_market_idx;
