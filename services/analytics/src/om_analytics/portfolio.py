"""User positions and performance, as pure functions (docs/metrics.md has the formulas).

A position is a user's shares of one outcome of one market, kept as four sums (shares and currency bought and
sold), so trades add up the same in any order. Cost basis is the average buy price over all buys; open
positions are marked to market at the current YES price (a NO share is worth 1 - price); a resolved market pays
`resolution_price` per YES share and `1 - resolution_price` per NO share; a cancelled market refunds, so its
positions end at zero P&L and do not count toward the success rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from om_contracts import TradeExecuted

#: Weights of the risk score's three parts (they sum to 1, so the score is within 0..100).
RISK_WEIGHTS = {"concentration": 0.4, "exposure_ratio": 0.3, "leverage": 0.3}
#: A single open position as large as this many average trades counts as full leverage.
LEVERAGE_TRADES = 10


def payoff(outcome: str, yes_price: float) -> float:
    """What one share of `outcome` is worth at a YES price (or pays at a resolution price)."""
    return yes_price if outcome == "YES" else 1.0 - yes_price


@dataclass(frozen=True)
class Position:
    market_id: str
    outcome: str
    buy_shares: float = 0.0
    buy_cost: float = 0.0
    sell_shares: float = 0.0
    sell_proceeds: float = 0.0
    trades: int = 0

    def add(self, trade: TradeExecuted) -> Position:
        if trade.side == "BUY":
            return replace(
                self, buy_shares=self.buy_shares + trade.shares, buy_cost=self.buy_cost + trade.amount,
                trades=self.trades + 1,
            )  # fmt: skip
        return replace(
            self, sell_shares=self.sell_shares + trade.shares, sell_proceeds=self.sell_proceeds + trade.amount,
            trades=self.trades + 1,
        )  # fmt: skip

    @property
    def net_shares(self) -> float:
        return self.buy_shares - self.sell_shares

    @property
    def average_price(self) -> float:
        """Average buy price per share (0 before any buy)."""
        return self.buy_cost / self.buy_shares if self.buy_shares > 0 else 0.0

    @property
    def exposure(self) -> float:
        """Cost basis of the shares still held: what the user can still lose on it."""
        return max(0.0, self.net_shares) * self.average_price

    def realized(self) -> float:
        """P&L locked in by sells: proceeds less the average cost of the shares sold."""
        return self.sell_proceeds - self.sell_shares * self.average_price

    def unrealized(self, yes_price: float) -> float:
        """Shares still held, marked at the current price, less their average cost."""
        return self.net_shares * (payoff(self.outcome, yes_price) - self.average_price)

    def resolved_pnl(self, resolution_price: float) -> float:
        """Everything received (sells and payout) less everything spent."""
        return self.sell_proceeds + self.net_shares * payoff(self.outcome, resolution_price) - self.buy_cost


def positions_from_trades(trades: Iterable[TradeExecuted]) -> dict[tuple[str, str, str], Position]:
    """Positions by (user, market, outcome) from a set of trades (the reference the stored sums must match)."""
    positions: dict[tuple[str, str, str], Position] = {}
    for t in trades:
        key = (t.user_id, t.market_id, t.outcome)
        positions[key] = positions.get(key, Position(t.market_id, t.outcome)).add(t)
    return positions


@dataclass(frozen=True)
class Settlement:
    """One user's result in one market that ended."""

    pnl: float
    counted: bool  # resolved (not cancelled): counts toward the success rate
    won: bool


def settle(positions: Iterable[Position], status: str, resolution_price: float | None) -> Settlement:
    """A user's positions (both outcomes) in a market that was resolved or cancelled."""
    if status == "cancelled" or resolution_price is None:
        return Settlement(pnl=0.0, counted=False, won=False)  # refunded: what was paid in comes back
    pnl = sum(p.resolved_pnl(resolution_price) for p in positions)
    return Settlement(pnl=pnl, counted=True, won=pnl > 1e-9)


def risk_score(open_exposures: list[float], total_volume: float, average_trade_size: float) -> float:
    """0 (nothing at risk) to 100: 40 % concentration (Herfindahl index of exposure across markets), 30 %
    exposure ratio (exposure / all-time volume), 30 % leverage (largest position / 10 average trades)."""
    exposures = [e for e in open_exposures if e > 0]
    return risk_score_of(
        sum(exposures), sum(e * e for e in exposures), max(exposures, default=0.0), total_volume, average_trade_size
    )


def risk_score_of(
    exposure: float, exposure_squares: float, largest: float, total_volume: float, average_trade_size: float
) -> float:
    """`risk_score` from the sums it needs (total exposure, sum of squared per-market exposures, the largest):
    the Herfindahl index sum((e / E)^2) is sum(e^2) / E^2, so a user's snapshot needs no list of markets."""
    if exposure <= 0:
        return 0.0
    concentration = exposure_squares / (exposure * exposure)
    exposure_ratio = min(1.0, exposure / total_volume) if total_volume > 0 else 1.0
    leverage = min(1.0, largest / (LEVERAGE_TRADES * average_trade_size)) if average_trade_size else 1.0
    score = (
        RISK_WEIGHTS["concentration"] * concentration
        + RISK_WEIGHTS["exposure_ratio"] * exposure_ratio
        + RISK_WEIGHTS["leverage"] * leverage
    )
    return round(100.0 * score, 2)


@dataclass(frozen=True)
class OpenBook:
    """A user's positions in markets still open, summed to what a snapshot needs of them. PostgreSQL computes the
    same sums per user (`store.user_inputs`), so a snapshot costs one row per user in Python however many
    positions the user holds; `open_book` is the definition (and the tests' reference)."""

    realized: float = 0.0  # sum of Position.realized()
    unrealized: float = 0.0  # sum of Position.unrealized(price)
    exposure: float = 0.0  # sum over markets of the market's positive position exposures
    exposure_squares: float = 0.0  # sum over markets of that exposure squared
    largest_exposure: float = 0.0  # the largest market exposure
    open_positions: int = 0  # positions with shares still held (long or short)


def open_book(open_positions: Iterable[tuple[Position, float]]) -> OpenBook:
    """The sums of open positions, each with its market's YES price."""
    held = list(open_positions)
    by_market: dict[str, float] = {}
    for p, _ in held:
        if p.exposure > 0:
            by_market[p.market_id] = by_market.get(p.market_id, 0.0) + p.exposure
    return OpenBook(
        realized=sum(p.realized() for p, _ in held),
        unrealized=sum(p.unrealized(price) for p, price in held),
        exposure=sum(by_market.values()),
        exposure_squares=sum(e * e for e in by_market.values()),
        largest_exposure=max(by_market.values(), default=0.0),
        open_positions=sum(1 for p, _ in held if abs(p.net_shares) > 1e-12),
    )


def preferred_categories(category_volume: dict[str, float]) -> list[str]:
    """The user's top 3 categories by traded volume (ties by name)."""
    return [c for c, _ in sorted(category_volume.items(), key=lambda cv: (-cv[1], cv[0]))][:3]


@dataclass(frozen=True)
class UserTotals:
    """What is kept per user as it happens: all-time counts and the results of markets that ended."""

    total_trades: int = 0
    total_volume: float = 0.0
    first_trade_at: datetime | None = None
    last_trade_at: datetime | None = None
    settled_pnl: float = 0.0
    resolved_positions: int = 0
    winning_positions: int = 0


def user_metrics(
    totals: UserTotals,
    open_positions: Iterable[tuple[Position, float]],
    category_volume: dict[str, float],
    as_of: datetime,
) -> dict[str, Any]:
    """A user's metrics from their totals and their positions in markets still open (with each market's YES
    price). `category_volume` is the user's traded volume per market category."""
    return user_metrics_of(totals, open_book(open_positions), preferred_categories(category_volume), as_of)


def user_metrics_of(totals: UserTotals, book: OpenBook, preferred: list[str], as_of: datetime) -> dict[str, Any]:
    """`user_metrics` from the sums of the open positions and the preferred categories."""
    realized = totals.settled_pnl + book.realized
    average = totals.total_volume / totals.total_trades if totals.total_trades else 0.0
    days = 1.0
    if totals.first_trade_at is not None:
        days = max(1.0, (max(as_of, totals.first_trade_at) - totals.first_trade_at) / timedelta(days=1))
    return {
        "as_of": as_of,
        "total_trades": totals.total_trades,
        "total_volume": round(totals.total_volume, 6),
        "average_trade_size": round(average, 6),
        "resolved_positions": totals.resolved_positions,
        "winning_positions": totals.winning_positions,
        "success_rate": (
            round(totals.winning_positions / totals.resolved_positions, 6) if totals.resolved_positions else None
        ),
        "realized_pnl": round(realized, 6),
        "unrealized_pnl": round(book.unrealized, 6),
        "total_pnl": round(realized + book.unrealized, 6),
        "exposure": round(book.exposure, 6),
        "open_positions": book.open_positions,
        "risk_score": risk_score_of(
            book.exposure, book.exposure_squares, book.largest_exposure, totals.total_volume, average
        ),
        "trades_per_day": round(totals.total_trades / days, 6),
        "preferred_categories": preferred,
        "first_trade_at": totals.first_trade_at,
        "last_activity_at": totals.last_trade_at,
    }
