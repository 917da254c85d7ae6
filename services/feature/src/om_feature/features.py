"""Streaming per-market features, as pure functions of a market's state and the next event.

Definitions (also in docs/features.md):
- current_price: YES price after the latest trade by event time (the opening price before any trade).
- total_volume: sum of trade amounts. trade_count: number of trades. participant_count: distinct traders.
- days_remaining: (close_at - as_of) in days, never below 0; unknown until the market's creation is seen.
- price_volatility: population standard deviation of the last `WINDOW` trade prices by event time (needs 2).
- momentum_indicator: the newest minus the oldest price in that window.
- social_sentiment / news_sentiment: exponentially weighted mean (alpha 0.3) of the sentiment of that kind's
  signals: the source's score when it gave one, else the text's VADER compound score (om_feature.sentiment).
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from om_contracts import (
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketFeatures,
    MarketResolved,
    SignalObserved,
    TradeExecuted,
)
from om_feature import sentiment

WINDOW = 20
SENTIMENT_ALPHA = 0.3
DAY_S = 86_400.0
STATUS_AFTER = {MarketClosed: "closed", MarketResolved: "resolved", MarketCancelled: "cancelled"}


@dataclass(frozen=True)
class MarketState:
    market_id: str
    status: str = "open"
    category: str = ""
    close_at: datetime | None = None
    current_price: float = 0.5
    last_trade_at: datetime | None = None
    total_volume: float = 0.0
    trade_count: int = 0
    participant_count: int = 0
    #: The last WINDOW trades as (event time, price), oldest first, whatever order they arrived in.
    recent_trades: tuple[tuple[datetime, float], ...] = field(default=())
    social_sentiment: float | None = None
    news_sentiment: float | None = None


def on_created(state: MarketState, *, category: str, close_at: datetime, initial_price: float) -> MarketState:
    # A trade may have arrived first (topics are not ordered with each other): keep the price it set.
    price = state.current_price if state.trade_count else initial_price
    return replace(state, category=category, close_at=close_at, current_price=price)


def on_trade(
    state: MarketState, *, price_after: float, amount: float, executed_at: datetime, new_participant: bool
) -> MarketState:
    latest = state.last_trade_at is None or executed_at >= state.last_trade_at
    return replace(
        state,
        current_price=price_after if latest else state.current_price,
        last_trade_at=executed_at if latest else state.last_trade_at,
        total_volume=state.total_volume + amount,
        trade_count=state.trade_count + 1,
        participant_count=state.participant_count + int(new_participant),
        recent_trades=_in_window(state.recent_trades, executed_at, price_after),
    )


def _in_window(
    window: tuple[tuple[datetime, float], ...], at: datetime, price: float
) -> tuple[tuple[datetime, float], ...]:
    """Insert a trade in event-time order (a late one lands where it belongs) and keep the newest WINDOW."""
    position = bisect.bisect_right([t for t, _ in window], at)
    return (window[:position] + ((at, price),) + window[position:])[-WINDOW:]


def on_signal(state: MarketState, *, kind: str, sentiment: float | None) -> MarketState:
    if sentiment is None:
        return state
    attr = "social_sentiment" if kind == "social" else "news_sentiment"
    previous = getattr(state, attr)
    smoothed = sentiment if previous is None else SENTIMENT_ALPHA * sentiment + (1 - SENTIMENT_ALPHA) * previous
    return replace(state, **{attr: smoothed})


def on_status(state: MarketState, status: str) -> MarketState:
    return replace(state, status=status)


def apply(state: MarketState, event: Any, *, new_participant: bool = False) -> MarketState:
    """The state after a lifecycle event, trade or signal. `new_participant`: the trade's user is new here."""
    if isinstance(event, TradeExecuted):
        return on_trade(
            state,
            price_after=event.price_after,
            amount=event.amount,
            executed_at=event.occurred_at,
            new_participant=new_participant,
        )
    if isinstance(event, SignalObserved):
        scored = event.sentiment if event.sentiment is not None else sentiment.score(event.text)
        return on_signal(state, kind=event.kind, sentiment=scored)
    if isinstance(event, MarketCreated):
        return on_created(state, category=event.category, close_at=event.close_at, initial_price=event.initial_price)
    return on_status(state, STATUS_AFTER[type(event)])


def vector(state: MarketState, as_of: datetime) -> MarketFeatures:
    prices = [price for _, price in state.recent_trades]
    days = None
    if state.close_at is not None:
        days = max(0.0, (state.close_at - as_of).total_seconds() / DAY_S)
    return MarketFeatures(
        current_price=state.current_price,
        total_volume=state.total_volume,
        participant_count=state.participant_count,
        trade_count=state.trade_count,
        days_remaining=days,
        price_volatility=statistics.pstdev(prices) if len(prices) >= 2 else None,
        momentum_indicator=prices[-1] - prices[0] if len(prices) >= 2 else None,
        social_sentiment=state.social_sentiment,
        news_sentiment=state.news_sentiment,
    )
