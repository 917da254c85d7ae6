-- Prior history for bench/analytics.py, generated inside PostgreSQL into the tables analytics' replay fills:
-- %(trades)s trades over 29 days on 2,000 markets (all but m0..m199 resolved at the end), 5,000 users.
-- The same rows replay would write (buckets at 1m/1h/1d, positions, participants, users with their categories,
-- settlements, ...), made set-wise because producing a million trades through the broker would take longer than the
-- benchmark.
SELECT setseed(0.42);

INSERT INTO markets (market_id, category, created_at, close_at, opening_price, current_price, status,
                     resolution, resolution_price, resolved_at)
SELECT 'm' || i, (ARRAY['politics', 'sports', 'crypto', 'tech', 'weather'])[i %% 5 + 1], %(start)s,
       %(start)s + interval '30 days', 0.5, 0.5,
       CASE WHEN i < 200 THEN 'open' ELSE 'resolved' END,
       CASE WHEN i < 200 THEN NULL WHEN i %% 2 = 0 THEN 'YES' ELSE 'NO' END,
       CASE WHEN i < 200 THEN NULL WHEN i %% 2 = 0 THEN 1.0 ELSE 0.0 END,
       CASE WHEN i < 200 THEN NULL ELSE %(start)s + interval '29 days' END
FROM generate_series(0, 1999) AS i;

-- The prior trades themselves (analytics stores only their ids: `trades`), from which every other table is made.
CREATE TEMPORARY TABLE history_trades (trade_id text, market_id text, user_id text, amount float8,
                                       price_before float8, price_after float8, executed_at timestamptz, side text,
                                       outcome text, shares float8);

INSERT INTO history_trades (trade_id, market_id, user_id, amount, price_before, price_after, executed_at, side,
                            outcome, shares)
SELECT 'h' || g, 'm' || floor(random() * 2000)::int, 'u' || floor(random() * 5000)::int,
       round((1 + random() * 99)::numeric, 2)::float8, p, least(0.99, greatest(0.01, p + (random() - 0.5) * 0.06)),
       %(start)s + (interval '29 days') * g / %(trades)s,
       CASE WHEN random() < 0.8 THEN 'BUY' ELSE 'SELL' END, CASE WHEN random() < 0.5 THEN 'YES' ELSE 'NO' END,
       round((10 + random() * 200)::numeric, 2)::float8
FROM (SELECT g, 0.2 + random() * 0.6 AS p FROM generate_series(0, %(trades)s - 1) AS g) AS s;

INSERT INTO trades (trade_id, executed_at) SELECT trade_id, executed_at FROM history_trades;

INSERT INTO buckets (market_id, resolution, start, open, open_at, open_id, high, low, close, close_at, close_id,
                     volume, trades, price_volume, abs_move)
SELECT market_id, r.resolution, bucket,
       (array_agg(price_after ORDER BY executed_at, trade_id))[1], min(executed_at),
       (array_agg(trade_id ORDER BY executed_at, trade_id))[1], max(price_after), min(price_after),
       (array_agg(price_after ORDER BY executed_at DESC, trade_id DESC))[1], max(executed_at),
       (array_agg(trade_id ORDER BY executed_at DESC, trade_id DESC))[1],
       sum(amount), count(*), sum(amount * price_after), sum(abs(price_after - price_before))
FROM (VALUES ('1m', interval '1 minute'), ('1h', interval '1 hour'), ('1d', interval '1 day')) AS r(resolution, step)
CROSS JOIN LATERAL (SELECT t.*, date_bin(r.step, t.executed_at, '1970-01-01 00:00:00+00') AS bucket
                    FROM history_trades t) AS t
-- Minutes only within their retention (8 days before the live phase), as a running service keeps them: older
-- ones would all be pruned at once by the leader's first prune, inside the measured run.
WHERE r.resolution <> '1m' OR t.executed_at >= %(start)s + interval '22 days'
GROUP BY market_id, r.resolution, bucket;

INSERT INTO platform_minutes (start, volume, trades)
SELECT start, sum(volume), sum(trades) FROM buckets WHERE resolution = '1m' GROUP BY start;

INSERT INTO participants (market_id, user_id, last_trade_at)
SELECT market_id, user_id, max(executed_at) FROM history_trades GROUP BY market_id, user_id;

UPDATE markets m SET total_volume = t.volume, trade_count = t.n, last_trade_at = t.last_at,
       current_price = t.close, last_trade_id = t.last_id, last_event_at = t.last_at
FROM (SELECT market_id, sum(amount) AS volume, count(*) AS n, max(executed_at) AS last_at,
             (array_agg(price_after ORDER BY executed_at DESC, trade_id DESC))[1] AS close,
             (array_agg(trade_id ORDER BY executed_at DESC, trade_id DESC))[1] AS last_id
      FROM history_trades GROUP BY market_id) AS t
WHERE m.market_id = t.market_id;
UPDATE markets m SET participant_count = p.n
FROM (SELECT market_id, count(*) AS n FROM participants GROUP BY market_id) AS p WHERE m.market_id = p.market_id;

INSERT INTO positions (user_id, market_id, outcome, buy_shares, buy_cost, sell_shares, sell_proceeds, trades, settled)
SELECT t.user_id, t.market_id, t.outcome,
       coalesce(sum(t.shares) FILTER (WHERE side = 'BUY'), 0), coalesce(sum(t.amount) FILTER (WHERE side = 'BUY'), 0),
       coalesce(sum(t.shares) FILTER (WHERE side = 'SELL'), 0),
       coalesce(sum(t.amount) FILTER (WHERE side = 'SELL'), 0), count(*), bool_or(m.status = 'resolved')
FROM history_trades t JOIN markets m USING (market_id) GROUP BY t.user_id, t.market_id, t.outcome;

INSERT INTO settlements (user_id, market_id, pnl, counted, won)
SELECT p.user_id, p.market_id, s.pnl, true, s.pnl > 1e-9
FROM (SELECT user_id, market_id,
             sum(sell_proceeds + (buy_shares - sell_shares)
                 * CASE WHEN outcome = 'YES' THEN m.resolution_price ELSE 1 - m.resolution_price END - buy_cost) AS pnl
      FROM positions JOIN markets m USING (market_id) WHERE m.status = 'resolved' GROUP BY user_id, market_id) AS s
JOIN (SELECT DISTINCT user_id, market_id FROM positions) AS p USING (user_id, market_id);

INSERT INTO users (user_id, first_seen_at, last_trade_at, total_trades, total_volume, settled_pnl,
                   resolved_positions, winning_positions)
SELECT t.user_id, t.first_at, t.last_at, t.n, t.volume, coalesce(s.pnl, 0), coalesce(s.n, 0), coalesce(s.won, 0)
FROM (SELECT user_id, min(executed_at) AS first_at, max(executed_at) AS last_at, count(*) AS n,
             sum(amount) AS volume FROM history_trades GROUP BY user_id) AS t
LEFT JOIN (SELECT user_id, sum(pnl) AS pnl, count(*) AS n, count(*) FILTER (WHERE won) AS won
           FROM settlements GROUP BY user_id) AS s USING (user_id);

UPDATE users u SET categories = c.categories
FROM (SELECT user_id, jsonb_object_agg(category, volume) AS categories
      FROM (SELECT t.user_id, m.category, sum(t.amount) AS volume FROM history_trades t JOIN markets m USING (market_id)
            GROUP BY t.user_id, m.category) AS per GROUP BY user_id) AS c
WHERE u.user_id = c.user_id;

-- Every history trade is in its hour and day already: the leader rolls up from the next hour on.
UPDATE clock SET as_of = %(start)s + interval '29 days',
                 rolled_through = date_bin('1 hour', %(start)s + interval '29 days', '1970-01-01 00:00:00+00')
                                  + interval '1 hour';
ANALYZE;
