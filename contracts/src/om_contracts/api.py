"""The public write API's request and response bodies: served by the gateway, implemented by ingest.

Defined once here so the gateway validates and documents exactly what ingest accepts. Unknown fields are
refused, so typos fail loudly (422, naming the field). Numbers must be finite: NaN and ±Infinity (also spelt
`NaN`/`Infinity` in a JSON body) are refused with 422, since one infinite amount would poison every consumer.
Date-times are ISO 8601 strings with a UTC offset only: a number (which pydantic would read as a Unix time) is
refused with 422 naming the field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from om_contracts.events import MarketId, Probability, UserId

#: Largest accepted trade amount (currency units) and share count: far above any real trade, far below the range
#: where float sums over a market's history lose whole units.
MAX_AMOUNT = 1_000_000_000.0
MAX_SHARES = 1_000_000_000.0

#: Documented default of ingest's `INGEST_MAX_FUTURE_SKEW_S`; the check itself runs in ingest (it needs the clock).
DEFAULT_MAX_FUTURE_SKEW_S = 300.0

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(value: Any) -> Any:
    """Only an ISO 8601 date-time string is a date-time here (pydantic would read a number as a Unix time)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError("expected an ISO 8601 date-time with a UTC offset, e.g. 2026-11-25T12:00:00Z")
    return value


#: A date-time given as an ISO 8601 string with an offset (or a `datetime` in Python); never a number.
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]

OCCURRED_AT = (
    "Event time: when this happened in the domain (timezone required; stored in UTC). Defaults to the time ingest "
    "receives the request; send it to replay history. At most INGEST_MAX_FUTURE_SKEW_S (default "
    f"{DEFAULT_MAX_FUTURE_SKEW_S:.0f} s) in the future, else 422."
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        """No NUL character in text: a JSON body can carry one (`\\u0000`), and PostgreSQL cannot store it, so it
        would fail the write (a 500) instead of the request (a 422 naming the field)."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain the NUL character (\\u0000)")
        return value


class _Write(_In):
    """A write: it may say when it happened (`occurred_at`)."""

    occurred_at: IsoDateTime | None = Field(default=None, description=OCCURRED_AT)

    #: The older, write-specific name of the event time, still accepted (e.g. `executed_at` on trades).
    _legacy_time: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _one_event_time(self) -> Self:
        legacy = getattr(self, self._legacy_time) if self._legacy_time else None
        if legacy is not None and self.occurred_at is not None and legacy != self.occurred_at:
            raise ValueError(f"occurred_at and {self._legacy_time} are both given and differ; send one of them")
        return self

    @property
    def event_time(self) -> datetime | None:
        """The event time the client sent, under either name; None means "now"."""
        legacy = getattr(self, self._legacy_time) if self._legacy_time else None
        return self.occurred_at or legacy


class MarketIn(_Write):
    _legacy_time: ClassVar[str | None] = "created_at"
    market_id: MarketId | None = Field(default=None, description="Chosen by the caller, or generated.")
    question: str = Field(min_length=1, max_length=500)
    category: str = Field(default="general", min_length=1, max_length=64)
    close_at: IsoDateTime
    initial_price: Probability = 0.5
    created_at: IsoDateTime | None = Field(default=None, description="Same as `occurred_at` (older name).")


class TradeIn(_Write):
    _legacy_time: ClassVar[str | None] = "executed_at"
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
    amount: float = Field(
        gt=0, le=MAX_AMOUNT, description=f"Currency spent (BUY) or received (SELL); finite, in (0, {MAX_AMOUNT:.0e}]."
    )
    shares: float = Field(gt=0, le=MAX_SHARES, description=f"Shares bought or sold; finite, in (0, {MAX_SHARES:.0e}].")
    price: Probability = Field(description="The market's YES price after this trade.")
    executed_at: IsoDateTime | None = Field(default=None, description="Same as `occurred_at` (older name).")
    amount_estimated: bool = Field(
        default=False,
        description="True when `amount` is not known but estimated (e.g. shares × price for imported history).",
    )


class TradeBatchIn(_Write):
    trades: list[TradeIn] = Field(min_length=1, max_length=1000)
    occurred_at: IsoDateTime | None = Field(
        default=None, description="Event time of the trades that send none of their own. " + OCCURRED_AT
    )


class SignalIn(_Write):
    _legacy_time: ClassVar[str | None] = "observed_at"
    signal_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Idempotency key: the same id is recorded once."
    )
    market_id: MarketId
    kind: Literal["social", "news"]
    source: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=5000)
    sentiment: float | None = Field(default=None, ge=-1.0, le=1.0)
    observed_at: IsoDateTime | None = Field(default=None, description="Same as `occurred_at` (older name).")


class SignalBatchIn(_Write):
    signals: list[SignalIn] = Field(min_length=1, max_length=1000)
    occurred_at: IsoDateTime | None = Field(
        default=None, description="Event time of the signals that send none of their own. " + OCCURRED_AT
    )


class CloseIn(_Write):
    """Optional body of a close: only its event time."""


class ResolveIn(_Write):
    resolution: Literal["YES", "NO", "MKT"]
    resolution_price: Probability | None = None


class CancelIn(_Write):
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
    amount_estimated: bool = False


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


class SignalBatchOut(BaseModel):
    recorded: int = Field(description="Signals newly recorded (replayed ids are not counted again).")
    signals: list[SignalOut]


# --- raw upstream intake (ingest.raw-*.v1): records producers write to Kafka directly -------------------


class RawMarket(MarketIn):
    """A market written to `ingest.raw-markets.v1` by an upstream producer; ingest records it like
    `POST /v1/markets`. `market_id` is required, so a redelivered record is recognised (a replay)."""

    market_id: MarketId = Field(description="Required: the id that makes a redelivery a replay.")


class RawTrade(TradeIn):
    """A trade written to `ingest.raw-trades.v1` by an upstream producer; ingest records it like `POST /v1/trades`
    (same rules and bounds). `trade_id` is required, so a redelivered record is recognised (a replay)."""

    trade_id: str = Field(min_length=1, max_length=64, description="Required: makes a redelivery a replay.")


class RawSignal(SignalIn):
    """A signal written to `ingest.raw-signals.v1` by an upstream producer; ingest records it like
    `POST /v1/signals`. `signal_id` is required, so a redelivered record is recognised (a replay)."""

    signal_id: str = Field(min_length=1, max_length=64, description="Required: makes a redelivery a replay.")
