"""Training rows from a history folder without a running platform: the feature service's own pure domain
(`om_feature.features`) applied to each market's events in event-time order, snapshotted at seeded times
strictly before close. The rows have the shape of feature's training export (interfaces item 3), so training
takes either this or the HTTP export through the same code."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from om_cli.history.format import MarketRecord, Record, ResolutionRecord, SignalRecord, TradeRecord
from om_feature import features, sentiment
from om_feature.features import CategoryHistory, MarketState


def _events_by_market(records: list[Record]) -> dict[str, list[tuple[datetime, int, Record]]]:
    by_market: dict[str, list[tuple[datetime, int, Record]]] = defaultdict(list)
    for n, r in enumerate(records):
        if isinstance(r, TradeRecord):
            by_market[r.market_id].append((r.executed_at, n, r))
        elif isinstance(r, SignalRecord):
            by_market[r.market_id].append((r.observed_at, n, r))
    for events in by_market.values():
        events.sort(key=lambda e: (e[0], e[1]))
    return by_market


def _category_histories(
    records: list[Record], markets: dict[str, MarketRecord], last_price: dict[str, float]
) -> dict[str, CategoryHistory]:
    """Every resolution by category; `CategoryHistory.as_of(t)` only counts those strictly before t."""
    histories: dict[str, CategoryHistory] = {}
    for r in sorted(
        (r for r in records if isinstance(r, ResolutionRecord) and r.resolution in ("YES", "NO", "MKT")),
        key=lambda r: (r.resolved_at, r.market_id),
    ):
        m = markets.get(r.market_id)
        if m is None or r.resolution_price is None:
            continue
        final = last_price.get(r.market_id, m.initial_price)
        histories.setdefault(m.category, CategoryHistory()).add(
            r.market_id, r.resolved_at.timestamp(), final, r.resolution_price
        )
    return histories


def snapshot_rows(records: list[Record], *, per_market: int = 8, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Point-in-time rows of every resolved (not cancelled) market, in resolution order."""
    markets = {r.market_id: r for r in records if isinstance(r, MarketRecord)}
    settled = sorted(
        (r for r in records if isinstance(r, ResolutionRecord) and r.resolution != "CANCEL" and r.market_id in markets),
        key=lambda r: (r.resolved_at, r.market_id),
    )
    events = _events_by_market(records)
    last_price = {
        market_id: next((e.price_after for _, _, e in reversed(evs) if isinstance(e, TradeRecord)), None)
        for market_id, evs in events.items()
    }
    histories = _category_histories(records, markets, {k: v for k, v in last_price.items() if v is not None})
    config = features.DEFAULT
    for res in settled:
        m = markets[res.market_id]
        end = min(m.close_at, res.closed_at, res.resolved_at)
        rng = random.Random(f"{seed}:{m.market_id}")  # nosec B311  # seeded, reproducible sampling; no secret
        if (end - m.created_at).total_seconds() <= 0:
            continue
        times = sorted(m.created_at + (end - m.created_at) * rng.uniform(0.02, 0.999) for _ in range(per_market))
        state = MarketState(m.market_id, 0, config)
        features.apply_created(
            state,
            event_id=f"created:{m.market_id}",
            at=m.created_at.timestamp(),
            category=m.category,
            close_at=m.close_at.timestamp(),
            initial_price=m.initial_price,
        )
        queue = events.get(m.market_id, [])
        i = 0
        for as_of in times:
            while i < len(queue) and queue[i][0] <= as_of:
                _, n, e = queue[i]
                if isinstance(e, TradeRecord):
                    features.apply_trade(
                        state,
                        config,
                        event_id=e.trade_id,
                        at=e.executed_at.timestamp(),
                        user_id=e.user_id,
                        amount=e.amount,
                        price_before=e.price_before,
                        price_after=e.price_after,
                    )
                elif isinstance(e, SignalRecord):
                    scored = e.sentiment if e.sentiment is not None else sentiment.score(e.text)
                    features.apply_signal(
                        state, config, event_id=e.signal_id, at=e.observed_at.timestamp(), kind=e.kind, sentiment=scored
                    )
                i += 1
            yield {
                "market_id": m.market_id,
                "category": m.category,
                "as_of": as_of,
                "close_at": m.close_at,
                "created_at": m.created_at,
                "resolved_at": res.resolved_at,
                "resolution": res.resolution,
                "resolution_price": res.resolution_price,
                "features": features.compute(state, config, histories.get(m.category), as_of.timestamp()),
            }
