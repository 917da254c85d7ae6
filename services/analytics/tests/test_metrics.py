"""analytics' market metric definitions against hand-computed cases: buckets, the 24 h window of minute buckets
ending at the latest event, the windowed metrics, candles, and order of arrival not mattering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_analytics import metrics
from om_contracts import PredictionMade, SignalObserved, TradeExecuted

NOW = datetime(2025, 6, 15, 12, 0, 30, tzinfo=UTC)

prices = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
positive_prices = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)


@pytest.mark.parametrize(
    ("current", "reference", "expected"),
    [(0.6, 0.5, 20.0), (0.4, 0.5, -20.0), (0.5, 0.5, 0.0), (1.0, 0.25, 300.0), (0.1, 0.3, -66.6667)],
)
def test_price_change_is_a_percentage(current: float, reference: float, expected: float) -> None:
    assert metrics.price_change_pct(current, reference) == expected


@pytest.mark.parametrize("reference", [0.0, None])
def test_price_change_is_zero_without_a_usable_reference(reference: float | None) -> None:
    assert metrics.price_change_pct(0.3, reference) == 0.0


@given(prices, positive_prices)
def test_price_change_sign_follows_the_move(current: float, reference: float) -> None:
    change = metrics.price_change_pct(current, reference)
    assert (change > 0) == (round((current - reference) / reference * 100, 4) > 0)
    assert change >= -100.0


def test_buckets_are_aligned_periods() -> None:
    at = datetime(2025, 6, 15, 12, 34, 56, 789, tzinfo=UTC)
    assert metrics.bucket_start(at, "1m") == datetime(2025, 6, 15, 12, 34, tzinfo=UTC)
    assert metrics.bucket_start(at, "1h") == datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
    assert metrics.bucket_start(at, "1d") == datetime(2025, 6, 15, tzinfo=UTC)


def test_the_window_is_the_1440_minutes_ending_with_the_latest_event() -> None:
    start, end = metrics.window_minutes(NOW)
    assert end == datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
    assert start == datetime(2025, 6, 14, 12, 0, tzinfo=UTC)  # exclusive: (start, end] holds 1,440 minutes


def trade(minutes_before: float, amount: float, before: float, after: float, trade_id: str | None = None,
          market: str = "m", user: str = "u1", outcome: str = "YES", side: str = "BUY",
          shares: float = 1.0) -> TradeExecuted:  # fmt: skip
    return TradeExecuted(
        occurred_at=NOW - timedelta(minutes=minutes_before), producer="t",
        trade_id=trade_id or f"t{minutes_before}", market_id=market, user_id=user, outcome=outcome, side=side,
        amount=amount, shares=shares, price_before=before, price_after=after,
    )  # fmt: skip


def signal(minutes_before: float, kind: str, sentiment: float | None) -> SignalObserved:
    return SignalObserved(
        occurred_at=NOW - timedelta(minutes=minutes_before), producer="t", signal_id=uuid.uuid4().hex[:8],
        market_id="m", kind=kind, source="s", text="x", sentiment=sentiment,
    )  # fmt: skip


# 25 h before (prior day), then three trades inside the window; two signals inside, one outside.
TRADES = [
    trade(25 * 60, 40.0, 0.5, 0.4),
    trade(2 * 60 + 0.3, 10.0, 0.4, 0.5),
    trade(60 + 0.2, 30.0, 0.5, 0.6),
    trade(0, 20.0, 0.6, 0.55),
]
SIGNALS = [signal(30, "social", 0.5), signal(3 * 60, "news", -0.1), signal(26 * 60, "social", None)]


def _minute_buckets(events) -> dict[datetime, metrics.Bucket]:
    return {start: b for (_, start), b in metrics.fold(events, "1m").items()}


def test_window_metrics_of_a_hand_computed_market() -> None:
    buckets = _minute_buckets([*TRADES, *SIGNALS])
    totals = metrics.window_totals(buckets, NOW)
    assert (totals.volume, totals.trades, totals.prior_volume) == (60.0, 3, 40.0)
    assert (totals.social, totals.news, totals.sentiment_n) == (1, 1, 2)
    reference = metrics.reference_price(buckets, NOW, opening_price=0.5)
    assert reference == 0.4  # the close of the last trade before the window
    result = metrics.market_window_metrics(0.55, reference, totals, active_traders=1)
    assert result == {
        "price_change_24h": 37.5,  # 0.4 → 0.55
        "volume_24h": 60.0,
        "trades_24h": 3,
        "volume_trend": 50.0,  # 60 against 40 the day before
        "active_traders_24h": 1,
        "volatility": 0.040825,  # pstdev of the minute closes 0.5, 0.6, 0.55
        "momentum": -0.016667,  # 0.55 - VWAP (10*0.5 + 30*0.6 + 20*0.55) / 60
        "liquidity": 2.4,  # 60 / (100 * (0.1 + 0.1 + 0.05))
        "social_mentions_24h": 1,
        "news_mentions_24h": 1,
        "sentiment_24h": 0.2,  # mean of 0.5 and -0.1
    }


def test_a_quiet_market_has_empty_windows_and_opening_reference() -> None:
    result = metrics.market_window_metrics(0.5, None, metrics.WindowTotals(), active_traders=0)
    assert (result["volume_24h"], result["volume_trend"], result["sentiment_24h"]) == (0.0, None, None)
    assert (result["price_change_24h"], result["volatility"], result["momentum"]) == (0.0, 0.0, 0.0)
    assert metrics.reference_price({}, NOW, opening_price=0.5) == 0.5


@settings(max_examples=50)
@given(st.permutations(TRADES + [trade(60 + 0.2, 5.0, 0.6, 0.7, trade_id="t-same-time")]))
def test_trades_in_any_order_give_the_same_buckets(order: list[TradeExecuted]) -> None:
    expected = metrics.fold(TRADES + [trade(60 + 0.2, 5.0, 0.6, 0.7, trade_id="t-same-time")], "1m")
    assert metrics.fold(order, "1m") == expected
    for resolution in ("1h", "1d"):
        assert metrics.fold(order, resolution) == metrics.fold(list(reversed(order)), resolution)


@settings(max_examples=50)
@given(st.permutations(TRADES + SIGNALS + [trade(60 + 0.2, 5.0, 0.6, 0.7, trade_id="t-same-time")]))
def test_the_batch_fold_equals_the_definition(order: list[TradeExecuted | SignalObserved]) -> None:
    expected = {
        (market_id, resolution, start): b
        for resolution in metrics.RESOLUTIONS
        for (market_id, start), b in metrics.fold(
            [e for e in order if resolution == "1m" or isinstance(e, TradeExecuted)], resolution
        ).items()
    }
    assert {k: metrics.Bucket(*row) for k, row in metrics.fold_all(order).items()} == expected


def test_only_late_trades_go_straight_to_their_hour_and_day() -> None:
    # Hours before 11:00 were rolled up already: the trade at 10:00 (2 h before) is late, the others are not.
    rolled_through = datetime(2025, 6, 15, 11, 0, tzinfo=UTC)
    folded = metrics.fold_all(TRADES[1:] + SIGNALS[:1], coarse_before=rolled_through)
    coarse = {(r, start) for (_, r, start) in folded if r != "1m"}
    assert coarse == {("1h", datetime(2025, 6, 15, 10, 0, tzinfo=UTC)), ("1d", datetime(2025, 6, 15, tzinfo=UTC))}
    assert metrics.Bucket(*folded[("m", "1h", datetime(2025, 6, 15, 10, 0, tzinfo=UTC))]).volume == 10.0
    assert sum(1 for (_, r, _) in folded if r == "1m") == 4  # three trades and one signal, each in its minute


def test_on_the_same_event_time_the_larger_trade_id_closes() -> None:
    a, b = trade(0, 1.0, 0.5, 0.6, trade_id="a"), trade(0, 1.0, 0.6, 0.7, trade_id="b")
    [(_, bucket)] = metrics.fold([b, a], "1m").items()
    assert (bucket.open, bucket.close, bucket.high, bucket.low) == (0.6, 0.7, 0.7, 0.6)


def test_candles_roll_minutes_up_to_hours() -> None:
    minutes = _minute_buckets(TRADES)
    hourly = metrics.candles(minutes, "1h")
    fields = ("open", "high", "low", "close", "volume", "trades")
    assert [(c["start"].hour, *(c[f] for f in fields)) for c in hourly] == [
        (11, 0.4, 0.4, 0.4, 0.4, 40.0, 1),
        (10, 0.5, 0.5, 0.5, 0.5, 10.0, 1),
        (11, 0.6, 0.6, 0.6, 0.6, 30.0, 1),
        (12, 0.55, 0.55, 0.55, 0.55, 20.0, 1),
    ]
    daily = metrics.candles(minutes, "1d")
    assert [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in daily] == [
        (0.4, 0.4, 0.4, 0.4, 40.0),
        (0.5, 0.6, 0.5, 0.55, 60.0),
    ]


def test_latest_prediction_per_market_is_from_the_newest_features() -> None:
    def prediction(market: str, p: float, minutes: int) -> PredictionMade:
        at = NOW + timedelta(minutes=minutes)
        return PredictionMade(
            occurred_at=at, producer="t", market_id=market, probability=p, confidence=max(p, 1 - p),
            risk_level="low", model_version="v", features_as_of=at,
        )  # fmt: skip

    latest = metrics.latest_predictions([prediction("a", 0.9, 5), prediction("a", 0.2, 1), prediction("b", 0.4, 0)])
    assert {p.market_id: p.probability for p in latest} == {"a": 0.9, "b": 0.4}
    # A final prediction (made at resolution) outranks a newer ordinary one, in either order.
    final = prediction("a", 0.7, 1).model_copy(update={"final": True})
    for order in ([prediction("a", 0.9, 5), final], [final, prediction("a", 0.9, 5)]):
        assert [p.probability for p in metrics.latest_predictions(order)] == [0.7]
