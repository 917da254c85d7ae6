"""The topic registry: the only place topic names are written down.

Each entry says which model a topic carries, what keys it, who produces and consumes it,
and whether downstream systems may rely on it (public) or not (internal).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import TypeAdapter

from om_contracts.api import RawMarket, RawSignal, RawTrade
from om_contracts.events import (
    DeadLetter,
    FeatureVectorComputed,
    MarketLifecycleEvent,
    MarketMetricsUpdated,
    ModelLifecycleChanged,
    PlatformHealthUpdated,
    PredictionMade,
    SignalObserved,
    SystemMetricsUpdated,
    TradeExecuted,
    UserMetricsUpdated,
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
        consumers=("feature", "analytics"),
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
    # Raw upstream intake: records (not events: no envelope) that producers write to Kafka directly. ingest
    # validates each like the HTTP write it mirrors, records the valid ones, dead-letters the rest with the reason.
    Topic(
        name="ingest.raw-markets.v1",
        model=RawMarket,
        key="market_id",
        producer="upstream producers",
        consumers=("ingest",),
        visibility="public",
        description="Markets from upstream systems, recorded by ingest as if POSTed to /v1/markets.",
    ),
    Topic(
        name="ingest.raw-trades.v1",
        model=RawTrade,
        key="market_id",
        producer="upstream producers",
        consumers=("ingest",),
        visibility="public",
        description="Trades from upstream systems, recorded by ingest as if POSTed to /v1/trades (in bulk).",
        partitions=6,
    ),
    Topic(
        name="ingest.raw-signals.v1",
        model=RawSignal,
        key="market_id",
        producer="upstream producers",
        consumers=("ingest",),
        visibility="public",
        description="Signals from upstream systems, recorded by ingest as if POSTed to /v1/signals.",
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

# Appended (analytics, issue 7).
TOPICS += (
    Topic(
        name="analytics.user.v1",
        model=UserMetricsUpdated,
        key="user_id",
        producer="analytics",
        consumers=("gateway",),
        visibility="public",
        description="A user's trading metrics (P&L, success rate, risk) after each batch that touched them.",
        retention_ms=DAY_MS,
    ),
    Topic(
        name="analytics.health.v1",
        model=PlatformHealthUpdated,
        key="event_type",
        producer="analytics",
        consumers=("gateway",),
        visibility="public",
        description="Per-service platform health read from each service's /metrics, on a cadence by one replica.",
        partitions=1,
        retention_ms=DAY_MS,
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
RAW_MARKETS = topic("ingest.raw-markets.v1")
RAW_TRADES = topic("ingest.raw-trades.v1")
RAW_SIGNALS = topic("ingest.raw-signals.v1")
MODEL_LIFECYCLE = topic("model.lifecycle.v1")
ANALYTICS_USER = topic("analytics.user.v1")
ANALYTICS_HEALTH = topic("analytics.health.v1")
