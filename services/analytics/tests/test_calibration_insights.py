"""Calibration (Brier, reliability, accuracy per model) and insights (comparables, disagreement), by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from om_analytics import calibration, insights
from om_analytics.calibration import Resolved

T = datetime(2025, 6, 15, tzinfo=UTC)


def test_brier_and_reliability_buckets() -> None:
    pairs = [(0.8, 1.0), (0.3, 0.0), (0.6, 0.0), (0.85, 1.0)]
    assert calibration.brier(pairs) == round((0.04 + 0.09 + 0.36 + 0.0225) / 4, 6)
    assert calibration.reliability(pairs) == [
        {"lower": 0.3, "upper": 0.4, "count": 1, "mean_forecast": 0.3, "observed_rate": 0.0},
        {"lower": 0.6, "upper": 0.7, "count": 1, "mean_forecast": 0.6, "observed_rate": 0.0},
        {"lower": 0.8, "upper": 0.9, "count": 2, "mean_forecast": 0.825, "observed_rate": 1.0},
    ]
    assert calibration.reliability([(1.0, 1.0)])[0]["lower"] == 0.9  # 1.0 falls in the last bucket
    assert calibration.brier([]) is None


ROWS = [
    Resolved("a", "sports", price=0.9, predicted=0.7, model_version="v1", outcome=1.0),
    Resolved("b", "sports", price=0.2, predicted=0.6, model_version="v1", outcome=0.0),
    Resolved("c", "politics", price=0.5, predicted=None, model_version=None, outcome=0.3),
]


def test_calibration_per_category() -> None:
    report = calibration.calibration(ROWS)
    assert report["resolved_markets"] == 3
    assert report["prices"]["brier"] == round((0.01 + 0.04 + 0.04) / 3, 6)
    assert report["predictions"]["count"] == 2
    assert report["predictions"]["brier"] == round((0.09 + 0.36) / 2, 6)
    assert set(report["by_category"]) == {"politics", "sports"}
    sports = calibration.calibration(ROWS, "sports")
    assert sports["resolved_markets"] == 2 and sports["prices"]["brier"] == 0.025


def test_accuracy_per_model_version() -> None:
    assert calibration.accuracy_by_model(ROWS) == {"v1": {"resolved_markets": 2, "accuracy": 0.5, "brier": 0.225}}


def test_comparable_markets_are_near_in_close_time_and_liquidity() -> None:
    target = insights.MarketPoint("t", T, 99.0)
    candidates = [
        insights.MarketPoint("t", T, 99.0),  # itself: left out
        insights.MarketPoint("week-later", T + timedelta(days=7), 99.0),  # distance 1
        insights.MarketPoint("same-time-thin", T, 9.0),  # log10(100) - log10(10) = 1
        insights.MarketPoint("near", T + timedelta(days=1), 99.0),  # 1/7
        insights.MarketPoint("no-close", None, 99.0),  # 30/7
    ]
    assert insights.comparable(target, candidates, limit=3) == [
        ("near", round(1 / 7, 6)),
        ("same-time-thin", 1.0),
        ("week-later", 1.0),
    ]


def test_model_disagreement_with_a_position() -> None:
    assert insights.disagreement("YES", 10.0, 0.3) is True
    assert insights.disagreement("YES", 10.0, 0.7) is False
    assert insights.disagreement("NO", 10.0, 0.7) is True
    assert insights.disagreement("NO", 0.0, 0.7) is None
    assert insights.disagreement("YES", 10.0, None) is None
