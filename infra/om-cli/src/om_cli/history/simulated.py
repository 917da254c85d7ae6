"""Simulated history, offline: the simulator's world run on a virtual clock, written in the generic format.

No platform and no sleeping: time jumps from one trade to the next (exponential gaps at `trades_per_market`
per market lifetime), so thousands of markets take seconds. Same seed and parameters, same history.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from om_cli.history.format import MarketRecord, Record, ResolutionRecord, SignalRecord, TradeRecord
from om_cli.simulator.world import CancelMarket, CloseMarket, CreateMarket, ResolveMarket, World, WorldConfig

DAY_S = 86_400.0
EPOCH = datetime(2025, 1, 6, tzinfo=UTC)


@dataclass(frozen=True)
class HistoryConfig:
    """Defaults for `om simulate --history` (the world's dynamics are WorldConfig's committed defaults)."""

    concurrent_markets: int = 40
    market_lifetime_days: float = 7.0
    lifetime_jitter: float = 0.6
    trades_per_market: float = 120.0  # on average over a market's life
    signals_per_trade: float = 0.4
    start: datetime = EPOCH


def world_config(history: HistoryConfig, base: WorldConfig | None = None) -> WorldConfig:
    base = base or WorldConfig()
    lifetime_s = history.market_lifetime_days * DAY_S
    return replace(
        base,
        markets=history.concurrent_markets,
        market_lifetime_s=lifetime_s,
        lifetime_jitter=history.lifetime_jitter,
        close_margin_s=0.0,
        resolve_delay_s=0.02 * lifetime_s,
    )


def simulate_history(
    markets: int, seed: int, history: HistoryConfig | None = None, world: WorldConfig | None = None
) -> Iterator[Record]:
    """Yield the records of `markets` markets, each settled (resolved or cancelled), in event-time order."""
    history = history or HistoryConfig()
    config = world_config(history, world)
    sim = World(seed, config)
    clock = random.Random(f"{seed}:clock")  # nosec B311  # a seeded simulation, reproducible; no secret
    lifetime_s = config.market_lifetime_s
    per_market_rate = history.trades_per_market / lifetime_s  # trades per second of one open market
    open_now = 0
    signal_every = history.signals_per_trade
    now = history.start
    created: dict[str, datetime] = {}
    closed: dict[str, datetime] = {}
    settled = 0
    next_lifecycle: datetime | None = now
    signal_credit = 0.0
    while settled < markets:
        if next_lifecycle is not None and now >= next_lifecycle:
            for action in sim.due_lifecycle(now, max_markets=markets):
                if isinstance(action, CreateMarket):
                    created[action.market_id] = now
                    yield MarketRecord(
                        market_id=action.market_id,
                        question=action.question,
                        category=action.category,
                        created_at=now,
                        close_at=action.close_at,
                        initial_price=action.initial_price,
                    )
                elif isinstance(action, CloseMarket):
                    closed[action.market_id] = now
                else:
                    settled += 1
                    yield _settlement(action, closed.pop(action.market_id, now), now)
            next_lifecycle = sim.next_event_at()
            open_now = len(sim.open_markets(now))
        if open_now == 0:  # winding down: nothing trades until the next close or settlement
            if next_lifecycle is None:
                break
            now = next_lifecycle
            continue
        step = timedelta(seconds=clock.expovariate(per_market_rate * open_now))
        if next_lifecycle is not None and now + step > next_lifecycle:
            now = next_lifecycle  # nothing trades past a life-cycle step; draw the next gap from there
            continue
        now += step
        trade = sim.next_trade(now)
        if trade is not None:
            yield TradeRecord(
                trade_id=trade.trade_id,
                market_id=trade.market_id,
                user_id=trade.user_id,
                outcome=trade.outcome,
                side=trade.side,
                amount=trade.amount,
                shares=round(trade.shares, 6),
                price_before=round(trade.price_before, 6),
                price_after=round(trade.price, 6),
                executed_at=now,
            )
        signal_credit += signal_every
        while signal_credit >= 1.0:
            signal_credit -= 1.0
            signal = sim.next_signal(now)
            if signal is not None:
                yield SignalRecord(
                    signal_id=signal.signal_id,
                    market_id=signal.market_id,
                    kind=signal.kind,
                    source=signal.source,
                    text=signal.text,
                    sentiment=signal.sentiment,
                    observed_at=now,
                )


def _settlement(action: ResolveMarket | CancelMarket, closed_at: datetime, now: datetime) -> ResolutionRecord:
    if isinstance(action, CancelMarket):
        return ResolutionRecord(action.market_id, closed_at, "CANCEL", None, now, action.reason)
    price = {"YES": 1.0, "NO": 0.0}.get(action.resolution, action.resolution_price)
    return ResolutionRecord(action.market_id, closed_at, action.resolution, price, now)
