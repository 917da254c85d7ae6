"""The topic registry: the only place topic names are written down.

Each entry says which model a topic carries, what keys it, who produces and consumes it,
and whether downstream systems may rely on it (public) or not (internal).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import TypeAdapter

from om_contracts.events import (
    DeadLetter,
    FeatureVectorComputed,
    MarketLifecycleEvent,
    MarketMetricsUpdated,
    ModelLifecycleChanged,
    PredictionMade,
    SignalObserved,
    SystemMetricsUpdated,
    TradeExecuted,
)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    model: Any  # a pydantic model, or an annotated union of them
    key: str  # the event field whose value is the Kafka key
    producer: str
    consumers: tuple[str, ...]
    visibility: Literal["public", "internal"]
    description: str
    partitions: int = 3
    retention_ms: int = 7 * DAY_MS

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.model)


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="market.lifecycle.v1",
        model=MarketLifecycleEvent,
        key="market_id",
        producer="ingest",
        consumers=("feature", "analytics", "prediction"),
        visibility="public",
        description="Markets created, closed, resolved and cancelled, in order per market.",
        retention_ms=-1,
    ),
    Topic(
        name="market.trades.v1",
        model=TradeExecuted,
        key="market_id",
        producer="ingest",
        consumers=("feature", "analytics"),
        visibility="public",
        description="Every executed trade, with the price before and after.",
    ),
    Topic(
        name="market.signals.v1",
        model=SignalObserved,
        key="market_id",
        producer="ingest",
        consumers=("feature",),
        visibility="public",
        description="Social posts and news items about a market.",
    ),
    Topic(
        name="feature.vectors.v1",
        model=FeatureVectorComputed,
        key="market_id",
        producer="feature",
        consumers=("prediction",),
        visibility="internal",
        description="A market's feature vector, recomputed after every event that changes it.",
        retention_ms=3 * DAY_MS,
    ),
    Topic(
        name="prediction.predictions.v1",
        model=PredictionMade,
        key="market_id",
        producer="prediction",
        consumers=("analytics",),
        visibility="public",
        description="Each market's predicted YES probability, confidence, explanation and model version.",
    ),
    Topic(
        name="analytics.market.v1",
        model=MarketMetricsUpdated,
        key="market_id",
        producer="analytics",
        consumers=("gateway",),
        visibility="public",
        description="A market's metrics after every change: price, 24 h change, volume, participants.",
        retention_ms=DAY_MS,
    ),
    Topic(
        name="analytics.system.v1",
        model=SystemMetricsUpdated,
        key="event_type",
        producer="analytics",
        consumers=("gateway",),
        visibility="public",
        description="Platform-wide metrics and top markets, published at most once per interval.",
        partitions=1,
        retention_ms=DAY_MS,
    ),
    Topic(
        name="platform.dead-letters.v1",
        model=DeadLetter,
        key="original_topic",
        producer="any consumer",
        consumers=(),
        visibility="internal",
        description="Events a consumer could not decode or validate, with the reason and original bytes.",
        partitions=1,
        retention_ms=30 * DAY_MS,
    ),
    Topic(
        name="model.lifecycle.v1",
        model=ModelLifecycleChanged,
        key="event_type",
        producer="prediction (om models, prediction train)",
        consumers=("prediction",),
        visibility="internal",
        description="Model versions entering candidate, production or archived; every prediction replica swaps.",
        partitions=1,
        retention_ms=30 * DAY_MS,
    ),
)

_BY_NAME = {t.name: t for t in TOPICS}


def topic(name: str) -> Topic:
    """Look a topic up by name; an unknown name is a programming error."""
    return _BY_NAME[name]


# Names as constants so code refers to a registry entry, never to a string literal.
MARKET_LIFECYCLE = topic("market.lifecycle.v1")
MARKET_TRADES = topic("market.trades.v1")
MARKET_SIGNALS = topic("market.signals.v1")
FEATURE_VECTORS = topic("feature.vectors.v1")
PREDICTIONS = topic("prediction.predictions.v1")
ANALYTICS_MARKET = topic("analytics.market.v1")
ANALYTICS_SYSTEM = topic("analytics.system.v1")
DEAD_LETTERS = topic("platform.dead-letters.v1")
MODEL_LIFECYCLE = topic("model.lifecycle.v1")
