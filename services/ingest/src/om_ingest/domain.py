"""The rules of the system of record, as pure functions: what may happen to a market, and what follows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Status = Literal["open", "closed", "resolved", "cancelled"]
Resolution = Literal["YES", "NO", "MKT"]


class DomainError(Exception):
    """A request the rules refuse. `status_code` is the HTTP status that says so; `field` points at the input."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None, location: str = "body") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.location = location  # "body" or "path": where the offending input was


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Invalid(DomainError):
    status_code = 422


@dataclass(frozen=True)
class Market:
    market_id: str
    status: Status
    created_at: datetime
    close_at: datetime
    current_price: float
    last_trade_at: datetime | None


def check_event_time(at: datetime, now: datetime, max_future_skew: timedelta, *, field: str = "occurred_at") -> None:
    """An event time may run ahead of ingest's clock by at most `max_future_skew` (clients' clocks drift a little);
    further ahead it is a mistake, and one trade "from the future" would freeze its market's price until then."""
    ahead = at - now
    if ahead > max_future_skew:
        raise Invalid(
            f"{field} {at.isoformat()} is {ahead.total_seconds():.0f} s in the future; "
            f"at most {max_future_skew.total_seconds():.0f} s ahead of ingest's clock is accepted",
            field=field,
        )


def check_not_before_creation(market: Market, at: datetime, what: str) -> None:
    """A lifecycle change cannot happen before the market existed."""
    if at < market.created_at:
        raise Invalid(
            f"market {market.market_id!r} cannot be {what} at {at.isoformat()}, before it was created "
            f"({market.created_at.isoformat()})",
            field="occurred_at",
        )


def check_new_market(created_at: datetime, close_at: datetime) -> None:
    if close_at <= created_at:
        raise Invalid(f"close_at ({close_at.isoformat()}) must be after created_at", field="close_at")


def require(market: Market | None, market_id: str, *, location: str = "body") -> Market:
    if market is None:
        raise NotFound(f"market {market_id!r} does not exist", field="market_id", location=location)
    return market


def check_trade(market: Market, executed_at: datetime) -> None:
    if market.status != "open":
        raise Conflict(f"market {market.market_id!r} is {market.status}; it takes no trades", field="market_id")
    if executed_at >= market.close_at:
        raise Conflict(
            f"trade executed at {executed_at.isoformat()}, after market {market.market_id!r} "
            f"closed at {market.close_at.isoformat()}",
            field="executed_at",
        )
    if executed_at < market.created_at:
        raise Invalid("trade executed before the market was created", field="executed_at")


def price_after(market: Market, trade_price: float, executed_at: datetime) -> tuple[float, datetime]:
    """The market price is the price after its latest trade by event time, so a late-arriving trade
    is recorded but does not move the price back."""
    if market.last_trade_at is None or executed_at >= market.last_trade_at:
        return trade_price, executed_at
    return market.current_price, market.last_trade_at


def check_close(market: Market) -> None:
    if market.status != "open":
        raise Conflict(f"market {market.market_id!r} is {market.status}; only an open market can close")


def resolution_price(market: Market, resolution: Resolution, price: float | None) -> float:
    """Check a resolution and return the price it settles at (YES 1, NO 0, MKT the given probability)."""
    if market.status in ("resolved", "cancelled"):
        raise Conflict(f"market {market.market_id!r} is already {market.status}")
    fixed = {"YES": 1.0, "NO": 0.0}.get(resolution)
    if fixed is None:
        if price is None:
            raise Invalid("an MKT resolution needs resolution_price", field="resolution_price")
        return price
    if price is not None and price != fixed:
        raise Invalid(f"a {resolution} resolution settles at {fixed}, not {price}", field="resolution_price")
    return fixed


def check_cancel(market: Market) -> None:
    if market.status in ("resolved", "cancelled"):
        raise Conflict(f"market {market.market_id!r} is already {market.status}")
