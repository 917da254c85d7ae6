"""The public write API's request and response bodies: served by the gateway, implemented by ingest.

Defined once here so the gateway validates and documents exactly what ingest accepts. Unknown fields are
refused, so typos fail loudly (422, naming the field)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from om_contracts.events import MarketId, Probability, UserId


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MarketIn(_In):
    market_id: MarketId | None = Field(default=None, description="Chosen by the caller, or generated.")
    question: str = Field(min_length=1, max_length=500)
    category: str = Field(default="general", min_length=1, max_length=64)
    close_at: AwareDatetime
    initial_price: Probability = 0.5
    created_at: AwareDatetime | None = Field(default=None, description="Event time; defaults to now.")


class TradeIn(_In):
    trade_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Idempotency key: the same id is recorded once.",
    )
    market_id: MarketId
    user_id: UserId
    outcome: Literal["YES", "NO"]
    side: Literal["BUY", "SELL"] = "BUY"
    amount: float = Field(gt=0, description="Currency spent (BUY) or received (SELL).")
    shares: float = Field(gt=0)
    price: Probability = Field(description="The market's YES price after this trade.")
    executed_at: AwareDatetime | None = Field(default=None, description="Event time; defaults to now.")


class TradeBatchIn(_In):
    trades: list[TradeIn] = Field(min_length=1, max_length=1000)


class SignalIn(_In):
    signal_id: str | None = Field(default=None, min_length=1, max_length=64)
    market_id: MarketId
    kind: Literal["social", "news"]
    source: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=5000)
    sentiment: float | None = Field(default=None, ge=-1.0, le=1.0)
    observed_at: AwareDatetime | None = None


class ResolveIn(_In):
    resolution: Literal["YES", "NO", "MKT"]
    resolution_price: Probability | None = None


class CancelIn(_In):
    reason: str = Field(default="", max_length=500)


class MarketOut(BaseModel):
    market_id: str
    question: str
    category: str
    status: Literal["open", "closed", "resolved", "cancelled"]
    created_at: datetime
    close_at: datetime
    current_price: float
    last_trade_at: datetime | None
    resolution: Literal["YES", "NO", "MKT"] | None
    resolution_price: float | None


class TradeOut(BaseModel):
    trade_id: str
    market_id: str
    user_id: str
    outcome: Literal["YES", "NO"]
    side: Literal["BUY", "SELL"]
    amount: float
    shares: float
    price_before: float
    price_after: float
    executed_at: datetime


class TradeBatchOut(BaseModel):
    recorded: int = Field(description="Trades newly recorded (replayed ids are not counted again).")
    trades: list[TradeOut]


class SignalOut(BaseModel):
    signal_id: str
    market_id: str
    kind: Literal["social", "news"]
    source: str
    sentiment: float | None
    observed_at: datetime
