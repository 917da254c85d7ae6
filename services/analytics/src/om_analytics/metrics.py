"""Market metric definitions, as pure functions over per-period buckets (docs/metrics.md has the formulas).

Every trade and signal lands in a bucket per market and minute; hours and days are rolled up from minutes.
Buckets merge in any order — open and close are chosen by (event time, trade id), sums add — so trades that
arrive out of order give the same buckets, and rolling windows are sums over the minute buckets of the window,
whose cost does not grow with history. Windows end at the latest event time seen (`as_of`), never at the wall
clock, so a replay computes the same figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from om_contracts import PredictionMade, SignalObserved, TradeExecuted

WINDOW = timedelta(hours=24)
RESOLUTIONS: dict[str, timedelta] = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(now: datetime) -> datetime:
    return now - WINDOW


def bucket_start(at: datetime, resolution: str) -> datetime:
    """The start of the period of `resolution` that holds `at` (periods are aligned on the Unix epoch, UTC)."""
    step = RESOLUTIONS[resolution]
    return EPOCH + ((at - EPOCH) // step) * step


def window_minutes(as_of: datetime) -> tuple[datetime, datetime]:
    """The 24 h window as minute buckets: those starting in (last - 24 h, last], `last` being as_of's minute."""
    last = bucket_start(as_of, "1m")
    return last - WINDOW, last


def price_change_pct(current: float, reference: float | None) -> float:
    if not reference:
        return 0.0
    return round((current - reference) / reference * 100.0, 4)


#: The order of trades: by event time, then trade id, so the order of arrival never matters.
TradeKey = tuple[datetime, str]


def trade_key(trade: TradeExecuted) -> TradeKey:
    return (trade.occurred_at, trade.trade_id)


@dataclass(frozen=True)
class Bucket:
    """One market's trades and signals in one period. `merge` is commutative and associative."""

    open: float | None = None
    open_key: TradeKey | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    close_key: TradeKey | None = None
    volume: float = 0.0
    trades: int = 0
    price_volume: float = 0.0  # sum of amount * price_after, for the volume-weighted average price
    abs_move: float = 0.0  # sum of |price_after - price_before|
    social: int = 0
    news: int = 0
    sentiment_sum: float = 0.0
    sentiment_n: int = 0

    def merge(self, other: Bucket) -> Bucket:
        first = _earlier(self, other, "open_key")
        last = _later(self, other, "close_key")
        return Bucket(
            open=first.open,
            open_key=first.open_key,
            high=_opt(max, self.high, other.high),
            low=_opt(min, self.low, other.low),
            close=last.close,
            close_key=last.close_key,
            volume=self.volume + other.volume,
            trades=self.trades + other.trades,
            price_volume=self.price_volume + other.price_volume,
            abs_move=self.abs_move + other.abs_move,
            social=self.social + other.social,
            news=self.news + other.news,
            sentiment_sum=self.sentiment_sum + other.sentiment_sum,
            sentiment_n=self.sentiment_n + other.sentiment_n,
        )


def _earlier(a: Bucket, b: Bucket, key: str) -> Bucket:
    ka, kb = getattr(a, key), getattr(b, key)
    return a if kb is None or (ka is not None and ka <= kb) else b


def _later(a: Bucket, b: Bucket, key: str) -> Bucket:
    ka, kb = getattr(a, key), getattr(b, key)
    return a if kb is None or (ka is not None and ka >= kb) else b


def _opt(pick: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else pick(a, b)


def trade_bucket(trade: TradeExecuted) -> Bucket:
    key = trade_key(trade)
    p = trade.price_after
    return Bucket(
        open=p, open_key=key, high=p, low=p, close=p, close_key=key, volume=trade.amount, trades=1,
        price_volume=trade.amount * p, abs_move=abs(p - trade.price_before),
    )  # fmt: skip


def signal_bucket(signal: SignalObserved) -> Bucket:
    sentiment = signal.sentiment
    return Bucket(
        social=int(signal.kind == "social"),
        news=int(signal.kind == "news"),
        sentiment_sum=sentiment if sentiment is not None else 0.0,
        sentiment_n=int(sentiment is not None),
    )


def fold(events: Iterable[TradeExecuted | SignalObserved], resolution: str) -> dict[tuple[str, datetime], Bucket]:
    """Buckets of `resolution` per (market, period start) for a batch of trades and signals."""
    buckets: dict[tuple[str, datetime], Bucket] = {}
    for e in events:
        piece = trade_bucket(e) if isinstance(e, TradeExecuted) else signal_bucket(e)
        key = (e.market_id, bucket_start(e.occurred_at, resolution))
        buckets[key] = buckets[key].merge(piece) if key in buckets else piece
    return buckets


def fold_all(
    events: Iterable[TradeExecuted | SignalObserved], coarse_before: datetime | None = None
) -> dict[tuple[str, str, datetime], list[Any]]:
    """`fold` in one pass, keyed by (market, resolution, start): every event at 1 m, and trades in minutes before
    `coarse_before` (None: every trade) also at 1 h and 1 d — later hours and days are rolled up from the minutes
    (`store.roll_up`). The batch path's version, with mutable sums instead of a bucket per event. Each value
    holds a Bucket's fields in order (`Bucket(*row)`); equal to `fold` (tested)."""
    acc: dict[tuple[str, str, datetime], list[Any]] = {}
    for e in events:
        minute = bucket_start(e.occurred_at, "1m")
        if isinstance(e, TradeExecuted):
            key, p = (e.occurred_at, e.trade_id), e.price_after
            move = abs(p - e.price_before)
            keys: tuple[tuple[str, str, datetime], ...] = ((e.market_id, "1m", minute),)
            if coarse_before is None or minute < coarse_before:  # a late trade: its hour was rolled up already
                keys += (
                    (e.market_id, "1h", bucket_start(minute, "1h")),
                    (e.market_id, "1d", bucket_start(minute, "1d")),
                )
            for k in keys:
                a = acc.get(k)
                if a is None:
                    acc[k] = [p, key, p, p, p, key, e.amount, 1, e.amount * p, move, 0, 0, 0.0, 0]
                    continue
                if a[1] is None or key < a[1]:
                    a[0], a[1] = p, key
                a[2] = p if a[2] is None else max(a[2], p)
                a[3] = p if a[3] is None else min(a[3], p)
                if a[5] is None or key > a[5]:
                    a[4], a[5] = p, key
                a[6] += e.amount
                a[7] += 1
                a[8] += e.amount * p
                a[9] += move
        else:
            k = (e.market_id, "1m", minute)
            a = acc.setdefault(k, [None, None, None, None, None, None, 0.0, 0, 0.0, 0.0, 0, 0, 0.0, 0])
            a[10] += int(e.kind == "social")
            a[11] += int(e.kind == "news")
            if e.sentiment is not None:
                a[12] += e.sentiment
                a[13] += 1
    return acc


@dataclass(frozen=True)
class WindowTotals:
    """Sums over a market's minute buckets of the 24 h window (and of the 24 h before it, for the trend)."""

    volume: float = 0.0
    trades: int = 0
    price_volume: float = 0.0
    abs_move: float = 0.0
    social: int = 0
    news: int = 0
    sentiment_sum: float = 0.0
    sentiment_n: int = 0
    close_stddev: float | None = None  # population stddev of the minute closes in the window
    prior_volume: float = 0.0  # volume of the 24 h before the window


def window_totals(buckets: dict[datetime, Bucket], as_of: datetime) -> WindowTotals:
    """The window sums from minute buckets keyed by their start (the reference the SQL query must match)."""
    start, end = window_minutes(as_of)
    inside = [b for m, b in buckets.items() if start < m <= end]
    closes = [b.close for b in inside if b.close is not None]
    return WindowTotals(
        volume=sum(b.volume for b in inside),
        trades=sum(b.trades for b in inside),
        price_volume=sum(b.price_volume for b in inside),
        abs_move=sum(b.abs_move for b in inside),
        social=sum(b.social for b in inside),
        news=sum(b.news for b in inside),
        sentiment_sum=sum(b.sentiment_sum for b in inside),
        sentiment_n=sum(b.sentiment_n for b in inside),
        close_stddev=statistics.pstdev(closes) if len(closes) >= 2 else None,
        prior_volume=sum(b.volume for m, b in buckets.items() if start - WINDOW < m <= start),
    )


def reference_price(buckets: dict[datetime, Bucket], as_of: datetime, opening_price: float | None) -> float | None:
    """The price 24 h before: the close of the last minute bucket before the window, else the opening price."""
    start, _ = window_minutes(as_of)
    before = [(m, b.close) for m, b in buckets.items() if m <= start and b.close is not None]
    return max(before)[1] if before else opening_price


def market_window_metrics(
    current_price: float, reference: float | None, totals: WindowTotals, active_traders: int
) -> dict[str, float | int | None]:
    """The windowed market metrics from the window's sums (definitions in docs/metrics.md)."""
    vwap = totals.price_volume / totals.volume if totals.volume > 0 else None
    return {
        "price_change_24h": price_change_pct(current_price, reference),
        "volume_24h": _round(totals.volume),
        "trades_24h": totals.trades,
        "volume_trend": (
            round((totals.volume - totals.prior_volume) / totals.prior_volume * 100.0, 4)
            if totals.prior_volume > 0
            else None
        ),
        "active_traders_24h": active_traders,
        "volatility": _round(totals.close_stddev) if totals.close_stddev is not None else 0.0,
        "momentum": _round(current_price - vwap) if vwap is not None else 0.0,
        "liquidity": _round(totals.volume / max(100.0 * totals.abs_move, 1.0)),
        "social_mentions_24h": totals.social,
        "news_mentions_24h": totals.news,
        "sentiment_24h": _round(totals.sentiment_sum / totals.sentiment_n) if totals.sentiment_n else None,
    }


def _round(x: float, digits: int = 6) -> float:
    return round(x, digits) if math.isfinite(x) else 0.0


def prediction_rank(p: PredictionMade) -> tuple[bool, datetime, str]:
    """Which of a market's predictions it keeps: a final one (made at resolution) over any other, then the one
    from the newest features, then the larger event id, so the order of arrival never matters."""
    return (p.final, p.features_as_of, str(p.event_id))


def latest_predictions(predictions: Iterable[PredictionMade]) -> list[PredictionMade]:
    """One prediction per market: the highest `prediction_rank`."""
    latest: dict[str, PredictionMade] = {}
    for p in predictions:
        held = latest.get(p.market_id)
        if held is None or prediction_rank(p) > prediction_rank(held):
            latest[p.market_id] = p
    return list(latest.values())


def candles(buckets: dict[datetime, Bucket], resolution: str) -> list[dict[str, Any]]:
    """OHLCV candles of a coarser `resolution` from finer buckets keyed by start; periods without trades are
    left out (a chart carries the last close forward)."""
    merged: dict[datetime, Bucket] = {}
    for start, b in buckets.items():
        if b.trades == 0:
            continue
        key = bucket_start(start, resolution)
        merged[key] = merged[key].merge(b) if key in merged else b
    return [
        {"start": k, "open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": _round(b.volume),
         "trades": b.trades}
        for k, b in sorted(merged.items())
    ]  # fmt: skip
