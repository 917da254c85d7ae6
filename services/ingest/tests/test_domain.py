"""ingest's market rules as pure functions: which requests are refused (and with which status and field),
and how a trade moves the market price when trades arrive out of event-time order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_ingest import domain
from om_ingest.domain import Conflict, DomainError, Invalid, Market, NotFound

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CLOSE = T0 + timedelta(days=7)


def market(**overrides: object) -> Market:
    base = Market(
        market_id="m-1",
        status="open",
        created_at=T0,
        close_at=CLOSE,
        current_price=0.4,
        last_trade_at=None,
    )
    return replace(base, **overrides)


# --- error types ------------------------------------------------------------------------------------


def test_error_status_codes() -> None:
    assert DomainError("x").status_code == 400
    assert NotFound("x").status_code == 404
    assert Conflict("x").status_code == 409
    assert Invalid("x").status_code == 422
    assert all(issubclass(cls, DomainError) for cls in (NotFound, Conflict, Invalid))


def test_error_keeps_message_and_field() -> None:
    err = Invalid("bad", field="close_at")
    assert (err.message, err.field, str(err)) == ("bad", "close_at", "bad")
    assert Conflict("no").field is None


# --- check_new_market -------------------------------------------------------------------------------


def test_new_market_closing_after_creation_is_accepted() -> None:
    assert domain.check_new_market(T0, T0 + timedelta(microseconds=1)) is None


@pytest.mark.parametrize("close_at", [T0, T0 - timedelta(seconds=1), T0 - timedelta(days=365)])
def test_new_market_must_close_after_creation(close_at: datetime) -> None:
    with pytest.raises(Invalid) as info:
        domain.check_new_market(T0, close_at)
    assert info.value.status_code == 422
    assert info.value.field == "close_at"
    assert close_at.isoformat() in info.value.message


def test_new_market_compares_instants_across_timezones() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 13:00+02:00 is 11:00 UTC: before a creation at 12:00 UTC, although the wall clock reads later.
    with pytest.raises(Invalid):
        domain.check_new_market(T0, datetime(2025, 1, 1, 13, 0, tzinfo=plus_two))
    # 15:00+02:00 is 13:00 UTC: after it.
    assert domain.check_new_market(T0, datetime(2025, 1, 1, 15, 0, tzinfo=plus_two)) is None


# --- require ----------------------------------------------------------------------------------------


def test_require_returns_the_market() -> None:
    m = market()
    assert domain.require(m, "m-1") is m


def test_require_missing_market_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        domain.require(None, "nope")
    assert info.value.status_code == 404
    assert info.value.field == "market_id"
    assert "'nope'" in info.value.message


# --- check_trade ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "executed_at",
    [T0, T0 + timedelta(seconds=1), CLOSE - timedelta(microseconds=1)],
    ids=["at-creation", "mid", "last-microsecond"],
)
def test_trade_on_open_market_within_its_life_is_accepted(executed_at: datetime) -> None:
    assert domain.check_trade(market(), executed_at) is None


@pytest.mark.parametrize("status", ["closed", "resolved", "cancelled"])
def test_trade_on_market_that_is_not_open_is_a_conflict(status: str) -> None:
    with pytest.raises(Conflict) as info:
        domain.check_trade(market(status=status), T0 + timedelta(hours=1))
    assert info.value.status_code == 409
    assert info.value.field == "market_id"
    assert status in info.value.message


@pytest.mark.parametrize("executed_at", [CLOSE, CLOSE + timedelta(microseconds=1), CLOSE + timedelta(days=30)])
def test_trade_at_or_after_close_is_a_conflict_on_executed_at(executed_at: datetime) -> None:
    with pytest.raises(Conflict) as info:
        domain.check_trade(market(), executed_at)
    assert info.value.status_code == 409
    assert info.value.field == "executed_at"


@pytest.mark.parametrize("executed_at", [T0 - timedelta(microseconds=1), T0 - timedelta(days=1)])
def test_trade_before_creation_is_invalid(executed_at: datetime) -> None:
    with pytest.raises(Invalid) as info:
        domain.check_trade(market(), executed_at)
    assert info.value.status_code == 422
    assert info.value.field == "executed_at"


def test_trade_on_closed_market_reports_status_before_timing() -> None:
    # Both rules are broken; the status is the reason given.
    with pytest.raises(Conflict) as info:
        domain.check_trade(market(status="closed"), CLOSE + timedelta(days=1))
    assert info.value.field == "market_id"


# --- price_after ------------------------------------------------------------------------------------


def test_first_trade_sets_price_and_time() -> None:
    t = T0 + timedelta(hours=1)
    assert domain.price_after(market(), 0.7, t) == (0.7, t)


def test_newer_trade_moves_price() -> None:
    m = market(current_price=0.6, last_trade_at=T0 + timedelta(hours=1))
    t = T0 + timedelta(hours=2)
    assert domain.price_after(m, 0.3, t) == (0.3, t)


def test_trade_at_same_instant_as_latest_moves_price() -> None:
    t = T0 + timedelta(hours=1)
    m = market(current_price=0.6, last_trade_at=t)
    assert domain.price_after(m, 0.2, t) == (0.2, t)


def test_late_trade_does_not_move_price_back() -> None:
    latest = T0 + timedelta(hours=2)
    m = market(current_price=0.6, last_trade_at=latest)
    assert domain.price_after(m, 0.1, T0 + timedelta(hours=1)) == (0.6, latest)


prices = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def trade_sequences(draw: st.DrawFn) -> list[tuple[int, float]]:
    """A set of (seconds-after-creation, price) trades in any order; timestamps may repeat."""
    trades = draw(st.lists(st.tuples(st.integers(min_value=0, max_value=50), prices), min_size=1, max_size=25))
    return draw(st.permutations(trades))


@given(trade_sequences())
def test_final_price_is_that_of_the_trade_latest_by_event_time(trades: list[tuple[int, float]]) -> None:
    m = market()
    for seconds, price in trades:
        executed_at = T0 + timedelta(seconds=seconds)
        domain.check_trade(m, executed_at)
        new_price, last_trade_at = domain.price_after(m, price, executed_at)
        m = replace(m, current_price=new_price, last_trade_at=last_trade_at)

    latest = max(seconds for seconds, _ in trades)
    # Among trades sharing the latest timestamp, the one applied last wins.
    expected = [price for seconds, price in trades if seconds == latest][-1]
    assert m.current_price == expected
    assert m.last_trade_at == T0 + timedelta(seconds=latest)


# --- check_close ------------------------------------------------------------------------------------


def test_open_market_can_close() -> None:
    assert domain.check_close(market()) is None


@pytest.mark.parametrize("status", ["closed", "resolved", "cancelled"])
def test_only_open_market_can_close(status: str) -> None:
    with pytest.raises(Conflict) as info:
        domain.check_close(market(status=status))
    assert info.value.status_code == 409
    assert status in info.value.message


# --- resolution_price -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["open", "closed"])
@pytest.mark.parametrize(("resolution", "expected"), [("YES", 1.0), ("NO", 0.0)])
def test_yes_and_no_settle_at_fixed_prices(status: str, resolution: str, expected: float) -> None:
    m = market(status=status)
    assert domain.resolution_price(m, resolution, None) == expected
    # Stating the matching price explicitly is fine too.
    assert domain.resolution_price(m, resolution, expected) == expected


@pytest.mark.parametrize("price", [0.0, 0.37, 1.0])
def test_mkt_settles_at_the_given_price(price: float) -> None:
    assert domain.resolution_price(market(status="closed"), "MKT", price) == price


def test_mkt_needs_a_price() -> None:
    with pytest.raises(Invalid) as info:
        domain.resolution_price(market(status="closed"), "MKT", None)
    assert info.value.status_code == 422
    assert info.value.field == "resolution_price"


@pytest.mark.parametrize(("resolution", "price"), [("YES", 0.0), ("YES", 0.99), ("NO", 1.0), ("NO", 0.01)])
def test_price_contradicting_the_resolution_is_invalid(resolution: str, price: float) -> None:
    with pytest.raises(Invalid) as info:
        domain.resolution_price(market(status="closed"), resolution, price)
    assert info.value.status_code == 422
    assert info.value.field == "resolution_price"


@pytest.mark.parametrize("status", ["resolved", "cancelled"])
@pytest.mark.parametrize(("resolution", "price"), [("YES", None), ("NO", 0.0), ("MKT", 0.5)])
def test_resolving_a_resolved_or_cancelled_market_is_a_conflict(
    status: str, resolution: str, price: float | None
) -> None:
    with pytest.raises(Conflict) as info:
        domain.resolution_price(market(status=status), resolution, price)
    assert info.value.status_code == 409
    assert status in info.value.message


def test_conflict_takes_precedence_over_invalid_price() -> None:
    with pytest.raises(Conflict):
        domain.resolution_price(market(status="resolved"), "MKT", None)


# --- check_cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["open", "closed"])
def test_open_or_closed_market_can_be_cancelled(status: str) -> None:
    assert domain.check_cancel(market(status=status)) is None


@pytest.mark.parametrize("status", ["resolved", "cancelled"])
def test_resolved_or_cancelled_market_cannot_be_cancelled(status: str) -> None:
    with pytest.raises(Conflict) as info:
        domain.check_cancel(market(status=status))
    assert info.value.status_code == 409
    assert status in info.value.message


# --- event times --------------------------------------------------------------------------------------

SKEW = timedelta(minutes=5)


@pytest.mark.parametrize("ahead", [timedelta(0), -timedelta(days=400), SKEW])
def test_event_time_up_to_the_skew_ahead_is_accepted(ahead: timedelta) -> None:
    assert domain.check_event_time(T0 + ahead, T0, SKEW) is None


@pytest.mark.parametrize("ahead", [SKEW + timedelta(microseconds=1), timedelta(days=1)])
def test_event_time_further_ahead_is_refused_naming_the_field(ahead: timedelta) -> None:
    with pytest.raises(Invalid) as info:
        domain.check_event_time(T0 + ahead, T0, SKEW, field="executed_at")
    assert info.value.status_code == 422 and info.value.field == "executed_at"
    assert "future" in info.value.message


def test_lifecycle_change_cannot_predate_the_market() -> None:
    assert domain.check_not_before_creation(market(), T0, "closed") is None
    with pytest.raises(Invalid) as info:
        domain.check_not_before_creation(market(), T0 - timedelta(seconds=1), "resolved")
    assert info.value.field == "occurred_at" and "before it was created" in info.value.message


def test_a_trade_event_encoded_without_the_model_is_the_contracts_own_encoding() -> None:
    from om_contracts import TradeExecuted, encode
    from om_ingest.commands import _trade_event_json

    trade = {
        "trade_id": "t-1",
        "market_id": "m-1",
        "user_id": "u",
        "outcome": "YES",
        "side": "BUY",
        "amount": 5.1 / 3,
        "shares": 10.0,
        "price_before": 0.4,
        "price_after": 0.5,
        "executed_at": T0.astimezone(timezone(timedelta(hours=2))),
        "amount_estimated": True,
    }
    produced_at = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    built = _trade_event_json(trade, produced_at)
    validated = TradeExecuted.model_validate_json(built)  # a valid contract event ...
    assert encode(validated) == built  # ... byte for byte as the contract encodes it
    fields = {k: v for k, v in trade.items() if k != "executed_at"}
    assert validated.model_dump(include=set(fields)) == fields
    assert validated.occurred_at == T0 and validated.occurred_at.tzinfo == UTC
    assert (validated.produced_at, validated.producer) == (produced_at, "ingest")
    assert built.count(b"Z") >= 2  # occurred_at and produced_at in UTC, as the contract writes them
