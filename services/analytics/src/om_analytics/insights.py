"""Insights: comparable markets for a market, and where the model disagrees with a user's positions.

Comparable markets: other markets of the same category (any status), ranked by distance
`|close_at difference in days| / 7 + |log10(1 + liquidity) difference|` — a week apart in closing time weighs
as much as a tenfold difference in liquidity; ties by market id. A market without close time counts 30 days off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

UNKNOWN_CLOSE_DAYS = 30.0


@dataclass(frozen=True)
class MarketPoint:
    market_id: str
    close_at: datetime | None
    liquidity: float


def distance(a: MarketPoint, b: MarketPoint) -> float:
    if a.close_at is None or b.close_at is None:
        days = UNKNOWN_CLOSE_DAYS
    else:
        days = abs(a.close_at - b.close_at) / timedelta(days=1)
    return days / 7.0 + abs(math.log10(1.0 + max(a.liquidity, 0.0)) - math.log10(1.0 + max(b.liquidity, 0.0)))


def comparable(target: MarketPoint, candidates: list[MarketPoint], limit: int = 5) -> list[tuple[str, float]]:
    """The `limit` nearest other markets, as (market id, distance)."""
    ranked = sorted(
        ((round(distance(target, c), 6), c.market_id) for c in candidates if c.market_id != target.market_id),
    )
    return [(market_id, d) for d, market_id in ranked[:limit]]


def disagreement(outcome: str, net_shares: float, predicted_yes: float | None) -> bool | None:
    """Whether the model's prediction goes against a held position (YES held while the model says below 0.5, or
    NO held while it says above 0.5); None without a prediction or without shares."""
    if predicted_yes is None or net_shares <= 0:
        return None
    return predicted_yes < 0.5 if outcome == "YES" else predicted_yes > 0.5
