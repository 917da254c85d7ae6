"""Metric definitions, as pure functions (also in docs/metrics.md).

- price_change_24h: percent change of the YES price from its value 24 h ago (the last trade at or before then,
  else the opening price) to now; 0 when that reference price is 0.
- volume_24h: sum of trade amounts with event time in the last 24 h.
- active_users: distinct users with a trade in the last 24 h; active_markets: markets open for trading.
"""

from __future__ import annotations

from datetime import datetime, timedelta

WINDOW = timedelta(hours=24)


def window_start(now: datetime) -> datetime:
    return now - WINDOW


def price_change_pct(current: float, reference: float | None) -> float:
    if not reference:
        return 0.0
    return round((current - reference) / reference * 100.0, 4)
