"""Metric definitions, as pure functions (also in docs/metrics.md).

- price_change_24h: percent change of the YES price from its value 24 h ago (the last trade at or before then,
  else the opening price) to now; 0 when that reference price is 0.
- volume_24h: sum of trade amounts with event time in the last 24 h.
- active_users: distinct users with a trade in the last 24 h; active_markets: markets open for trading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from om_contracts import PredictionMade, TradeExecuted

WINDOW = timedelta(hours=24)


def window_start(now: datetime) -> datetime:
    return now - WINDOW


def price_change_pct(current: float, reference: float | None) -> float:
    if not reference:
        return 0.0
    return round((current - reference) / reference * 100.0, 4)


@dataclass(frozen=True)
class MarketDelta:
    """What a batch of new trades adds to one market."""

    market_id: str
    volume: float
    trades: int
    new_participants: int
    opening_price: float  # price_before of the earliest trade, for a market first seen through trades
    last_price: float  # price_after of the latest trade by event time (the last one given, on a tie)
    last_trade_at: datetime


def trade_deltas(trades: Iterable[TradeExecuted], new_participants: set[tuple[str, str]]) -> list[MarketDelta]:
    """Sum new trades per market. `new_participants` holds the (market, user) pairs never seen before."""
    by_market: dict[str, list[TradeExecuted]] = {}
    for t in trades:
        by_market.setdefault(t.market_id, []).append(t)
    deltas = []
    for market_id, group in by_market.items():
        earliest = min(group, key=lambda t: t.occurred_at)
        latest = max(reversed(group), key=lambda t: t.occurred_at)  # max keeps the first of ties: the last given
        deltas.append(
            MarketDelta(
                market_id=market_id,
                volume=sum(t.amount for t in group),
                trades=len(group),
                new_participants=sum(1 for m, _ in new_participants if m == market_id),
                opening_price=earliest.price_before,
                last_price=latest.price_after,
                last_trade_at=latest.occurred_at,
            )
        )
    return deltas


def user_activity(trades: Iterable[TradeExecuted]) -> dict[str, tuple[datetime, datetime]]:
    """Each user's first and last trade time among `trades`."""
    seen: dict[str, tuple[datetime, datetime]] = {}
    for t in trades:
        first, last = seen.get(t.user_id, (t.occurred_at, t.occurred_at))
        seen[t.user_id] = (min(first, t.occurred_at), max(last, t.occurred_at))
    return seen


def latest_predictions(predictions: Iterable[PredictionMade]) -> list[PredictionMade]:
    """One prediction per market: the one from the newest features."""
    latest: dict[str, PredictionMade] = {}
    for p in predictions:
        if p.market_id not in latest or p.features_as_of >= latest[p.market_id].features_as_of:
            latest[p.market_id] = p
    return list(latest.values())
