"""Is a history believable? Price steps per trade and the market price's Brier score at mid-life."""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from om_cli.history.format import MarketRecord, Record, ResolutionRecord, TradeRecord


@dataclass(frozen=True)
class HistoryStats:
    markets: int
    resolved_binary: int
    trades: int
    median_step: float  # median |price_after - price_before| per trade
    p99_step: float
    midlife_brier: float  # the market price at half of each YES/NO market's life against its outcome

    def lines(self) -> list[str]:
        return [
            f"markets {self.markets} ({self.resolved_binary} resolved YES/NO), trades {self.trades}",
            f"|price step| per trade: median {self.median_step:.4f}, p99 {self.p99_step:.4f}",
            f"market-price Brier at mid-life: {self.midlife_brier:.4f}",
        ]


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def history_stats(records: Iterable[Record]) -> HistoryStats:
    markets: dict[str, MarketRecord] = {}
    outcomes: dict[str, float] = {}
    trades: dict[str, list[tuple[float, float]]] = defaultdict(list)  # market -> (epoch s, price_after)
    steps: list[float] = []
    for r in records:
        if isinstance(r, MarketRecord):
            markets[r.market_id] = r
        elif isinstance(r, TradeRecord):
            trades[r.market_id].append((r.executed_at.timestamp(), r.price_after))
            steps.append(abs(r.price_after - r.price_before))
        elif isinstance(r, ResolutionRecord) and r.resolution in ("YES", "NO"):
            outcomes[r.market_id] = 1.0 if r.resolution == "YES" else 0.0
    errors = []
    for market_id, y in outcomes.items():
        m = markets.get(market_id)
        if m is None:
            continue
        mid = (m.created_at.timestamp() + m.close_at.timestamp()) / 2
        series = sorted(trades.get(market_id, []))
        i = bisect.bisect_right([t for t, _ in series], mid)
        price = series[i - 1][1] if i else m.initial_price
        errors.append((price - y) ** 2)
    steps.sort()
    return HistoryStats(
        markets=len(markets),
        resolved_binary=len(errors),
        trades=len(steps),
        median_step=statistics.median(steps) if steps else float("nan"),
        p99_step=_quantile(steps, 0.99),
        midlife_brier=statistics.fmean(errors) if errors else float("nan"),
    )
