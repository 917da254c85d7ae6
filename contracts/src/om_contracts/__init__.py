"""Opinion Market event contracts: what flows over Kafka, defined once.

Every event shares the `Envelope`; every topic is declared once in `topics.TOPICS`.
"""

from om_contracts.codec import DecodeError, decode, encode, key_of
from om_contracts.envelope import Envelope, derived_event_id, utcnow
from om_contracts.events import (
    ConsumerLag,
    DeadLetter,
    FeatureContribution,
    FeatureVectorComputed,
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketFeatures,
    MarketLifecycleEvent,
    MarketMetricsUpdated,
    MarketResolved,
    MarketSummary,
    ModelLifecycleChanged,
    PlatformHealthUpdated,
    PredictionMade,
    ServiceHealth,
    SignalObserved,
    SystemMetrics,
    SystemMetricsUpdated,
    TradeExecuted,
    UserMetricsUpdated,
)
from om_contracts.topics import TOPICS, Topic, topic

__all__ = [
    "TOPICS",
    "ConsumerLag",
    "DeadLetter",
    "DecodeError",
    "Envelope",
    "FeatureContribution",
    "FeatureVectorComputed",
    "MarketCancelled",
    "MarketClosed",
    "MarketCreated",
    "MarketFeatures",
    "MarketLifecycleEvent",
    "MarketMetricsUpdated",
    "MarketResolved",
    "MarketSummary",
    "ModelLifecycleChanged",
    "PlatformHealthUpdated",
    "PredictionMade",
    "ServiceHealth",
    "SignalObserved",
    "SystemMetrics",
    "SystemMetricsUpdated",
    "Topic",
    "TradeExecuted",
    "UserMetricsUpdated",
    "decode",
    "derived_event_id",
    "key_of",
    "encode",
    "topic",
    "utcnow",
]
