"""analytics' metric definitions: the 24 h price change in percent, the 24 h window, event-time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_analytics import metrics
from om_contracts import PredictionMade, TradeExecuted

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)

prices = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
positive_prices = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)


# --- price_change_pct -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "reference", "expected"),
    [
        (0.6, 0.5, 20.0),
        (0.4, 0.5, -20.0),
        (0.5, 0.5, 0.0),
        (1.0, 0.25, 300.0),
        (0.0, 0.8, -100.0),
        (0.1, 0.3, -66.6667),  # rounded to 4 decimals
        (0.55, 0.45, 22.2222),
    ],
)
def test_price_change_is_a_percentage(current: float, reference: float, expected: float) -> None:
    assert metrics.price_change_pct(current, reference) == expected


@pytest.mark.parametrize("reference", [0.0, None])
@pytest.mark.parametrize("current", [0.0, 0.3, 1.0])
def test_price_change_is_zero_without_a_usable_reference(current: float, reference: float | None) -> None:
    result = metrics.price_change_pct(current, reference)
    assert result == 0.0
    assert isinstance(result, float)


@given(prices, positive_prices)
def test_price_change_sign_follows_the_move(current: float, reference: float) -> None:
    change = metrics.price_change_pct(current, reference)
    if current > reference:
        assert change >= 0
    elif current < reference:
        assert change <= 0
    else:
        assert change == 0
    assert change >= -100.0
    assert change == round(change, 4)
    assert change == pytest.approx((current - reference) / reference * 100, abs=5e-5)


# --- window_start -----------------------------------------------------------------------------------


def test_window_is_the_last_24_hours() -> None:
    assert metrics.WINDOW == timedelta(hours=24)
    assert metrics.window_start(NOW) == datetime(2025, 6, 14, 12, 0, tzinfo=UTC)


def test_window_start_is_24_hours_of_elapsed_time_across_offsets() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert metrics.window_start(local) == datetime(2025, 6, 14, 12, 0, tzinfo=UTC)
    assert NOW - metrics.window_start(NOW) == timedelta(days=1)


# --- batch aggregation ---------------------------------------------------------------------------------


def _trade(market: str, user: str, amount: float, before: float, after: float, minutes: int) -> TradeExecuted:
    return TradeExecuted(
        occurred_at=NOW + timedelta(minutes=minutes), producer="t", trade_id=f"{market}-{user}-{minutes}",
        market_id=market, user_id=user, outcome="YES", amount=amount, shares=1.0,
        price_before=before, price_after=after,
    )  # fmt: skip


def test_trade_deltas_sum_per_market_and_take_the_latest_price_by_event_time() -> None:
    trades = [
        _trade("a", "u1", 10.0, 0.50, 0.60, minutes=5),
        _trade("a", "u2", 5.0, 0.60, 0.40, minutes=1),  # arrives later but happened first
        _trade("b", "u1", 2.0, 0.30, 0.35, minutes=2),
    ]
    deltas = {d.market_id: d for d in metrics.trade_deltas(trades, new_participants={("a", "u1"), ("a", "u2")})}
    a = deltas["a"]
    assert (a.volume, a.trades, a.new_participants) == (15.0, 2, 2)
    assert (a.last_price, a.last_trade_at) == (0.60, NOW + timedelta(minutes=5))
    assert a.opening_price == 0.60  # price_before of the earliest trade
    assert (deltas["b"].new_participants, deltas["b"].last_price) == (0, 0.35)


def test_on_a_tie_the_trade_given_last_sets_the_price() -> None:
    trades = [_trade("a", "u1", 1.0, 0.5, 0.6, minutes=0), _trade("a", "u2", 1.0, 0.6, 0.7, minutes=0)]
    [delta] = metrics.trade_deltas(trades, set())
    assert delta.last_price == 0.7


def test_user_activity_spans_first_to_last_trade() -> None:
    trades = [_trade("a", "u1", 1.0, 0.5, 0.5, minutes=m) for m in (3, 1, 7)]
    assert metrics.user_activity(trades) == {"u1": (NOW + timedelta(minutes=1), NOW + timedelta(minutes=7))}


def test_latest_prediction_per_market_is_the_one_from_the_newest_features() -> None:
    def prediction(market: str, p: float, minutes: int) -> PredictionMade:
        at = NOW + timedelta(minutes=minutes)
        return PredictionMade(
            occurred_at=at, producer="t", market_id=market, probability=p, confidence=max(p, 1 - p),
            risk_level="low", model_version="v", features_as_of=at,
        )  # fmt: skip

    latest = metrics.latest_predictions([prediction("a", 0.9, 5), prediction("a", 0.2, 1), prediction("b", 0.4, 0)])
    assert {p.market_id: p.probability for p in latest} == {"a": 0.9, "b": 0.4}
