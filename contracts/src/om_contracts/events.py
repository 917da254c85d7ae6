"""Event models, version 1. Additive optional fields keep the version; anything else is a v2 model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from om_contracts.envelope import Envelope, UtcDatetime

MarketId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
UserId = Annotated[str, Field(min_length=1, max_length=64)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Outcome = Literal["YES", "NO"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- market.lifecycle.v1 -------------------------------------------------------------------------


class MarketCreated(Envelope):
    """A binary market opened for trading. `initial_price` is the YES probability it opens at."""

    event_type: Literal["market.created"] = "market.created"
    market_id: MarketId
    question: str = Field(min_length=1, max_length=500)
    category: str = Field(min_length=1, max_length=64)
    close_at: UtcDatetime
    initial_price: Probability = 0.5


class MarketClosed(Envelope):
    """Trading stopped; the outcome is not known yet."""

    event_type: Literal["market.closed"] = "market.closed"
    market_id: MarketId


class MarketResolved(Envelope):
    """The outcome is known. `MKT` resolves at a probability (`resolution_price`)."""

    event_type: Literal["market.resolved"] = "market.resolved"
    market_id: MarketId
    resolution: Literal["YES", "NO", "MKT"]
    resolution_price: Probability = Field(description="1.0 for YES, 0.0 for NO, the probability for MKT.")


class MarketCancelled(Envelope):
    """The market is void; its trades are refunded and it has no outcome."""

    event_type: Literal["market.cancelled"] = "market.cancelled"
    market_id: MarketId
    reason: str = Field(default="", max_length=500)


MarketLifecycleEvent = Annotated[
    MarketCreated | MarketClosed | MarketResolved | MarketCancelled,
    Field(discriminator="event_type"),
]


# --- market.trades.v1 / market.signals.v1 ---------------------------------------------------------


class TradeExecuted(Envelope):
    """A user bought or sold shares of one outcome. `price_after` is the market's YES price after it."""

    event_type: Literal["trade.executed"] = "trade.executed"
    trade_id: str = Field(min_length=1, max_length=64)
    market_id: MarketId
    user_id: UserId
    outcome: Outcome
    side: Literal["BUY", "SELL"] = "BUY"
    amount: float = Field(gt=0, allow_inf_nan=False, description="Currency spent (BUY) or received (SELL).")
    shares: float = Field(gt=0, allow_inf_nan=False)
    price_before: Probability
    price_after: Probability
    amount_estimated: bool = Field(
        default=False, description="True when `amount` was not known but estimated (imported history)."
    )


class SignalObserved(Envelope):
    """A social post or news item about a market. `sentiment` in [-1, 1] when the source scored it."""

    event_type: Literal["signal.observed"] = "signal.observed"
    signal_id: str = Field(min_length=1, max_length=64)
    market_id: MarketId
    kind: Literal["social", "news"]
    source: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=5000)
    sentiment: float | None = Field(default=None, ge=-1.0, le=1.0)


# --- feature.vectors.v1 ---------------------------------------------------------------------------


class MarketFeatures(_Part):
    """The product's features as of one event time. `None` means not computable yet."""

    current_price: Probability
    total_volume: float = Field(ge=0)
    participant_count: int = Field(ge=0)
    trade_count: int = Field(ge=0)
    days_remaining: float | None = Field(default=None, ge=0, description="Unknown until the market is seen.")
    price_volatility: float | None = Field(default=None, ge=0)
    volume_trend: float | None = None
    social_sentiment: float | None = Field(default=None, ge=-1.0, le=1.0)
    news_sentiment: float | None = Field(default=None, ge=-1.0, le=1.0)
    historical_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    category_risk: float | None = Field(default=None, ge=0.0, le=1.0)
    liquidity_score: float | None = Field(default=None, ge=0)
    momentum_indicator: float | None = None


class FeatureVectorComputed(Envelope):
    event_type: Literal["feature.vector_computed"] = "feature.vector_computed"
    market_id: MarketId
    category: str = ""
    features: MarketFeatures
    source_event_id: str = Field(description="The event whose processing produced this vector.")


# --- prediction.predictions.v1 --------------------------------------------------------------------


class FeatureContribution(_Part):
    feature: str
    value: float | None
    contribution: float = Field(description="Signed effect on the YES probability.")


class PredictionMade(Envelope):
    """The model's probability that the market resolves YES, with how sure it is and why."""

    event_type: Literal["prediction.made"] = "prediction.made"
    market_id: MarketId
    probability: Probability
    confidence: Probability = Field(
        description="How sure the model is: from its ensemble's spread (baseline: max(p, 1 - p))."
    )
    risk_level: Literal["low", "medium", "high"]
    model_version: str = Field(min_length=1)
    contributions: list[FeatureContribution] = Field(default_factory=list)
    features_as_of: UtcDatetime
    risk_reasons: list[str] = Field(
        default_factory=list,
        description="Why the risk level is what it is: enumerated codes, documented in docs/prediction.md.",
    )
    final: bool = Field(default=False, description="The last prediction of a resolved or cancelled market.")
    market_price: Probability | None = Field(default=None, description="The market price the features carried.")


# --- model.lifecycle.v1 ---------------------------------------------------------------------------


class ModelLifecycleChanged(Envelope):
    """A model version changed state in the registry (candidate, production, archived); serving swaps on it."""

    event_type: Literal["model.lifecycle_changed"] = "model.lifecycle_changed"
    model_version: str = Field(min_length=1)
    state: Literal["candidate", "production", "archived"]
    previous_version: str | None = None
    checksum: str = ""


# --- analytics.market.v1 / analytics.system.v1 ----------------------------------------------------


class MarketMetricsUpdated(Envelope):
    event_type: Literal["analytics.market_metrics_updated"] = "analytics.market_metrics_updated"
    market_id: MarketId
    status: Literal["open", "closed", "resolved", "cancelled"]
    current_price: Probability
    price_change_24h: float = Field(description="Percent change of the YES price over the last 24 h.")
    volume_24h: float = Field(ge=0)
    total_volume: float = Field(ge=0)
    trade_count: int = Field(ge=0)
    participant_count: int = Field(ge=0)
    predicted_probability: Probability | None = None
    model_version: str | None = None
    # Additive (analytics issue 7); definitions in docs/metrics.md. All optional, so older events still decode.
    category: str | None = None
    as_of: UtcDatetime | None = Field(default=None, description="End of the rolling windows (latest event time).")
    trades_24h: int | None = Field(default=None, ge=0)
    volume_trend: float | None = Field(default=None, description="Percent change of volume_24h vs the 24 h before.")
    active_traders_24h: int | None = Field(default=None, ge=0)
    volatility: float | None = Field(default=None, ge=0)
    momentum: float | None = None
    liquidity: float | None = Field(default=None, ge=0)
    social_mentions_24h: int | None = Field(default=None, ge=0)
    news_mentions_24h: int | None = Field(default=None, ge=0)
    sentiment_24h: float | None = Field(default=None, ge=-1.0, le=1.0)
    prediction_confidence: Probability | None = None


class SystemMetrics(_Part):
    total_users: int = Field(ge=0)
    active_users: int = Field(ge=0, description="Distinct traders in the last 24 h.")
    total_markets: int = Field(ge=0)
    active_markets: int = Field(ge=0, description="Markets open for trading.")
    total_volume_24h: float = Field(ge=0)
    total_trades_24h: int = Field(ge=0)


class MarketSummary(_Part):
    market_id: MarketId
    current_price: Probability
    volume_24h: float = Field(ge=0)
    price_change_24h: float


class SystemMetricsUpdated(Envelope):
    """Platform-wide metrics and the most traded markets of the last 24 h."""

    event_type: Literal["analytics.system_metrics_updated"] = "analytics.system_metrics_updated"
    system_metrics: SystemMetrics
    top_markets: list[MarketSummary]


# --- analytics.user.v1 / analytics.health.v1 --------------------------------------------------------


class UserMetricsUpdated(Envelope):
    """A user's trading performance after a change (definitions in docs/metrics.md)."""

    event_type: Literal["analytics.user_metrics_updated"] = "analytics.user_metrics_updated"
    user_id: UserId
    as_of: UtcDatetime = Field(description="Latest event time seen when computed; prices are marked as of then.")
    total_trades: int = Field(ge=0)
    total_volume: float = Field(ge=0)
    average_trade_size: float = Field(ge=0)
    resolved_positions: int = Field(ge=0, description="Positions in resolved markets (cancelled ones excluded).")
    winning_positions: int = Field(ge=0)
    success_rate: float | None = Field(default=None, ge=0.0, le=1.0, description="Null before any resolution.")
    realized_pnl: float
    unrealized_pnl: float
    total_pnl: float
    exposure: float = Field(ge=0, description="Cost basis still at risk in open positions.")
    open_positions: int = Field(ge=0)
    risk_score: float = Field(ge=0.0, le=100.0)
    trades_per_day: float = Field(ge=0)
    preferred_categories: list[str] = Field(default_factory=list)
    first_trade_at: UtcDatetime | None = None
    last_activity_at: UtcDatetime | None = None


class ConsumerLag(_Part):
    group: str
    topic: str
    partition: int = Field(ge=0)
    lag: int = Field(ge=0)


class ServiceHealth(_Part):
    """What one service's `/metrics` said (null: the service does not expose that figure)."""

    service: str
    up: bool
    error: str | None = None
    processing_rate: float | None = Field(default=None, ge=0, description="Events handled per second.")
    error_rate: float | None = Field(default=None, ge=0, description="Failed batches per second.")
    dead_letter_rate: float | None = Field(default=None, ge=0, description="Dead letters published per second.")
    processing_p50_s: float | None = Field(default=None, ge=0)
    processing_p99_s: float | None = Field(default=None, ge=0)
    http_p50_s: float | None = Field(default=None, ge=0)
    http_p99_s: float | None = Field(default=None, ge=0)
    http_error_rate: float | None = Field(default=None, ge=0, le=1)
    cache_hit_rate: float | None = Field(default=None, ge=0, le=1)
    db_pool_in_use: float | None = Field(default=None, ge=0)
    cpu_seconds_per_second: float | None = Field(default=None, ge=0)
    memory_bytes: float | None = Field(default=None, ge=0)
    consumer_lag: list[ConsumerLag] = Field(default_factory=list)


class PlatformHealthUpdated(Envelope):
    """Each service's health, read from its `/metrics` and from Kafka's consumer offsets."""

    event_type: Literal["analytics.platform_health_updated"] = "analytics.platform_health_updated"
    services: list[ServiceHealth]


# --- platform.dead-letters.v1 ---------------------------------------------------------------------


class DeadLetter(Envelope):
    """An event a consumer could not process, kept with its original bytes and the reason."""

    event_type: Literal["platform.dead_letter"] = "platform.dead_letter"
    consumer: str = Field(description="Consumer group that rejected it.")
    original_topic: str
    original_partition: int | None = None
    original_offset: int | None = None
    original_key: str | None = None
    reason: str
    payload_base64: str = Field(description="The original message value, base64-encoded.")
