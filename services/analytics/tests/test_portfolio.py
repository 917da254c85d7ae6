"""Positions, P&L, settlement, risk and user metrics against hand-computed cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_analytics.portfolio import Position, UserTotals, positions_from_trades, risk_score, settle, user_metrics
from om_contracts import TradeExecuted

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def trade(i: int, side: str, outcome: str, amount: float, shares: float, market: str = "m") -> TradeExecuted:
    return TradeExecuted(
        occurred_at=NOW + timedelta(minutes=i), producer="t", trade_id=f"t{i}", market_id=market, user_id="u",
        outcome=outcome, side=side, amount=amount, shares=shares, price_before=0.5, price_after=0.5,
    )  # fmt: skip


YES_TRADES = [trade(0, "BUY", "YES", 4.0, 10.0), trade(1, "SELL", "YES", 2.4, 4.0)]


def test_a_partly_sold_yes_position() -> None:
    [p] = positions_from_trades(YES_TRADES).values()
    assert (p.net_shares, p.average_price) == (6.0, 0.4)
    assert p.realized() == pytest.approx(0.8)  # sold 4 at 0.6 that cost 0.4
    assert p.unrealized(0.7) == pytest.approx(1.8)  # 6 held, marked 0.7, cost 0.4
    assert p.exposure == pytest.approx(2.4)
    assert p.resolved_pnl(1.0) == pytest.approx(4.4)  # 2.4 received + 6 paid out - 4 spent
    assert p.resolved_pnl(0.0) == pytest.approx(-1.6)


def test_a_no_position_is_marked_at_one_minus_the_yes_price() -> None:
    p = Position("m", "NO", buy_shares=10.0, buy_cost=6.0)
    assert p.unrealized(0.3) == pytest.approx(1.0)  # NO worth 0.7 each, bought at 0.6
    assert p.resolved_pnl(0.0) == pytest.approx(4.0)  # a NO resolution pays 1 per NO share


def test_settlement_wins_loses_and_refunds() -> None:
    yes = positions_from_trades(YES_TRADES)[("u", "m", "YES")]
    no = Position("m", "NO", buy_shares=2.0, buy_cost=1.0)
    won = settle([yes, no], "resolved", 1.0)
    assert (won.pnl, won.counted, won.won) == (pytest.approx(3.4), True, True)  # 4.4 on YES, -1 on NO
    lost = settle([yes, no], "resolved", 0.0)
    assert (lost.pnl, lost.won) == (pytest.approx(-1.6 + 1.0), False)
    refunded = settle([yes, no], "cancelled", None)
    assert (refunded.pnl, refunded.counted, refunded.won) == (0.0, False, False)


@given(st.permutations(YES_TRADES + [trade(2, "BUY", "YES", 3.0, 5.0), trade(3, "SELL", "YES", 1.0, 1.0)]))
def test_positions_do_not_depend_on_the_order_of_trades(order: list[TradeExecuted]) -> None:
    [p] = positions_from_trades(order).values()
    assert (p.buy_shares, p.sell_shares) == (15.0, 5.0)
    assert p.buy_cost == pytest.approx(7.0) and p.sell_proceeds == pytest.approx(3.4)
    assert p.realized() == pytest.approx(3.4 - 5 * 7.0 / 15)


def test_risk_score_weighs_concentration_exposure_and_leverage() -> None:
    # exposure 40: concentration 0.75² + 0.25² = 0.625; ratio 40/100; leverage 30 / (10 * 20) = 0.15
    assert risk_score([30.0, 10.0], total_volume=100.0, average_trade_size=20.0) == 41.5
    assert risk_score([], 100.0, 20.0) == 0.0
    assert risk_score([50.0], total_volume=50.0, average_trade_size=1.0) == 100.0


def test_user_metrics_combine_settled_results_and_open_positions() -> None:
    totals = UserTotals(
        total_trades=4, total_volume=20.0, first_trade_at=NOW - timedelta(days=2), last_trade_at=NOW,
        settled_pnl=5.0, resolved_positions=2, winning_positions=1,
    )  # fmt: skip
    held = [(Position("a", "YES", buy_shares=10.0, buy_cost=4.0), 0.5)]
    result = user_metrics(totals, held, {"sports": 12.0, "politics": 8.0}, as_of=NOW)
    assert result["average_trade_size"] == 5.0
    assert result["success_rate"] == 0.5
    assert (result["realized_pnl"], result["unrealized_pnl"], result["total_pnl"]) == (5.0, 1.0, 6.0)
    assert (result["exposure"], result["open_positions"]) == (4.0, 1)
    # concentration 1, ratio 4/20, leverage 4 / (10 * 5)
    assert result["risk_score"] == round(100 * (0.4 * 1 + 0.3 * 0.2 + 0.3 * 0.08), 2)
    assert result["trades_per_day"] == 2.0
    assert result["preferred_categories"] == ["sports", "politics"]
    assert result["last_activity_at"] == NOW


def test_a_user_without_resolutions_has_no_success_rate() -> None:
    result = user_metrics(UserTotals(total_trades=1, total_volume=1.0, first_trade_at=NOW), [], {}, as_of=NOW)
    assert result["success_rate"] is None and result["risk_score"] == 0.0 and result["trades_per_day"] == 1.0
