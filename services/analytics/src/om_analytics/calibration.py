"""Calibration of market prices and of predictions over resolved markets: Brier score and reliability buckets.

An outcome is the market's `resolution_price` (1 for YES, 0 for NO, the announced probability for MKT), so a
MKT resolution scores the distance to that probability. Cancelled markets are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

BUCKETS = 10  # reliability buckets of width 0.1: [0, 0.1), ..., [0.9, 1.0]


@dataclass(frozen=True)
class Resolved:
    """One resolved market: its last price, its latest prediction (if any) and how it resolved."""

    market_id: str
    category: str
    price: float | None
    predicted: float | None
    model_version: str | None
    outcome: float


def brier(pairs: list[tuple[float, float]]) -> float | None:
    """Mean squared difference between forecast and outcome; None without any pair."""
    if not pairs:
        return None
    return round(sum((f - o) ** 2 for f, o in pairs) / len(pairs), 6)


def reliability(pairs: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Per forecast bucket: how many, the mean forecast and the observed mean outcome (empty buckets left out)."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for f, o in pairs:
        groups.setdefault(min(int(f * BUCKETS), BUCKETS - 1), []).append((f, o))
    return [
        {
            "lower": i / BUCKETS,
            "upper": (i + 1) / BUCKETS,
            "count": len(g),
            "mean_forecast": round(sum(f for f, _ in g) / len(g), 6),
            "observed_rate": round(sum(o for _, o in g) / len(g), 6),
        }
        for i, g in sorted(groups.items())
    ]


def _report(rows: list[Resolved]) -> dict[str, Any]:
    prices = [(r.price, r.outcome) for r in rows if r.price is not None]
    predictions = [(r.predicted, r.outcome) for r in rows if r.predicted is not None]
    return {
        "resolved_markets": len(rows),
        "prices": {"count": len(prices), "brier": brier(prices), "reliability": reliability(prices)},
        "predictions": {
            "count": len(predictions),
            "brier": brier(predictions),
            "reliability": reliability(predictions),
        },
    }


def calibration(rows: Iterable[Resolved], category: str | None = None) -> dict[str, Any]:
    """The platform's calibration, overall (or of one category) and per category."""
    rows = [r for r in rows if category is None or r.category == category]
    by_category: dict[str, list[Resolved]] = {}
    for r in rows:
        by_category.setdefault(r.category, []).append(r)
    return {
        "category": category,
        **_report(rows),
        "by_category": {c: _report(rs) for c, rs in sorted(by_category.items())},
    }


def accuracy_by_model(rows: Iterable[Resolved]) -> dict[str, dict[str, Any]]:
    """Per model version: resolved markets it predicted, the share it called on the right side of 0.5 (YES/NO
    resolutions only) and its Brier score."""
    groups: dict[str, list[Resolved]] = {}
    for r in rows:
        if r.predicted is not None and r.model_version:
            groups.setdefault(r.model_version, []).append(r)
    result = {}
    for version, rs in sorted(groups.items()):
        decided = [(p, r.outcome) for r in rs if (p := r.predicted) is not None and r.outcome in (0.0, 1.0)]
        right = sum(1 for p, outcome in decided if (p >= 0.5) == (outcome == 1.0))
        result[version] = {
            "resolved_markets": len(rs),
            "accuracy": round(right / len(decided), 6) if decided else None,
            "brier": brier([(p, r.outcome) for r in rs if (p := r.predicted) is not None]),
        }
    return result
