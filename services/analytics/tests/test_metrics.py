"""analytics' metric definitions: the 24 h price change in percent, the 24 h window, event-time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_analytics import metrics

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
