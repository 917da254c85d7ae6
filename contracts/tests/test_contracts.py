"""The event contracts: every event type round-trips on its topic, bad bytes fail with a reason naming the
field, times are aware and in UTC, topic names and keys follow the rules, and the committed JSON Schemas are
current and accept what the models encode."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

import om_contracts
from om_contracts import (
    TOPICS,
    DeadLetter,
    DecodeError,
    FeatureContribution,
    FeatureVectorComputed,
    MarketCancelled,
    MarketClosed,
    MarketCreated,
    MarketFeatures,
    MarketMetricsUpdated,
    MarketResolved,
    MarketSummary,
    ModelLifecycleChanged,
    PlatformHealthUpdated,
    PredictionMade,
    SignalObserved,
    SystemMetrics,
    SystemMetricsUpdated,
    Topic,
    TradeExecuted,
    UserMetricsUpdated,
    decode,
    derived_event_id,
    encode,
    key_of,
    topic,
)
from om_contracts.api import RawMarket, RawSignal, RawTrade
from om_contracts.generate import OUT_DIR, main, message_models
from om_contracts.topics import MARKET_LIFECYCLE, MARKET_TRADES

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
T0 = datetime(2025, 4, 1, 8, 0, tzinfo=UTC)
ENV: dict[str, Any] = {"occurred_at": T0, "producer": "test"}


def examples() -> dict[str, list[BaseModel]]:
    """One example of every event type, by topic name."""
    feats = MarketFeatures(
        current_price=0.62,
        total_volume=1500.0,
        participant_count=12,
        trade_count=40,
        days_remaining=3.5,
        price_volatility=0.04,
        social_sentiment=0.2,
        news_sentiment=-0.1,
        momentum_indicator=0.05,
    )
    return {
        "market.lifecycle.v1": [
            MarketCreated(
                **ENV,
                market_id="m-1",
                question="Will it rain in Paris on 2 April?",
                category="weather",
                close_at=T0 + timedelta(days=1),
                initial_price=0.4,
            ),
            MarketClosed(**ENV, market_id="m-1"),
            MarketResolved(**ENV, market_id="m-1", resolution="MKT", resolution_price=0.35),
            MarketCancelled(**ENV, market_id="m-1", reason="ambiguous question"),
        ],
        "market.trades.v1": [
            TradeExecuted(
                **ENV,
                trade_id="t-1",
                market_id="m-1",
                user_id="alice",
                outcome="NO",
                side="SELL",
                amount=12.5,
                shares=20.0,
                price_before=0.41,
                price_after=0.38,
            )
        ],
        "market.signals.v1": [
            SignalObserved(
                **ENV,
                signal_id="s-1",
                market_id="m-1",
                kind="news",
                source="wire",
                text="Forecast: showers ☔",
                sentiment=-0.4,
            )
        ],
        "feature.vectors.v1": [
            FeatureVectorComputed(
                **ENV, market_id="m-1", category="weather", features=feats, source_event_id=str(uuid.uuid4())
            )
        ],
        "prediction.predictions.v1": [
            PredictionMade(
                **ENV,
                market_id="m-1",
                probability=0.62,
                confidence=0.62,
                risk_level="medium",
                model_version="baseline-market-price",
                contributions=[FeatureContribution(feature="current_price", value=0.62, contribution=0.12)],
                features_as_of=T0,
            )
        ],
        "analytics.market.v1": [
            MarketMetricsUpdated(
                **ENV,
                market_id="m-1",
                status="open",
                current_price=0.62,
                price_change_24h=-3.125,
                volume_24h=300.0,
                total_volume=1500.0,
                trade_count=40,
                participant_count=12,
                predicted_probability=0.62,
                model_version="baseline-market-price",
            )
        ],
        "analytics.system.v1": [
            SystemMetricsUpdated(
                **ENV,
                system_metrics=SystemMetrics(
                    total_users=100,
                    active_users=20,
                    total_markets=8,
                    active_markets=5,
                    total_volume_24h=4000.0,
                    total_trades_24h=250,
                ),
                top_markets=[
                    MarketSummary(market_id="m-1", current_price=0.62, volume_24h=300.0, price_change_24h=1.0)
                ],
            )
        ],
        "analytics.user.v1": [
            UserMetricsUpdated(
                **ENV,
                user_id="alice",
                as_of=T0,
                total_trades=3,
                total_volume=60.0,
                average_trade_size=20.0,
                resolved_positions=1,
                winning_positions=1,
                success_rate=1.0,
                realized_pnl=12.5,
                unrealized_pnl=-2.0,
                total_pnl=10.5,
                exposure=20.0,
                open_positions=1,
                risk_score=55.0,
                trades_per_day=1.5,
                preferred_categories=["weather"],
                first_trade_at=T0,
                last_activity_at=T0,
            )
        ],
        "analytics.health.v1": [
            PlatformHealthUpdated(
                **ENV,
                services=[
                    om_contracts.ServiceHealth(
                        service="feature",
                        up=True,
                        processing_rate=120.0,
                        processing_p99_s=0.05,
                        consumer_lag=[
                            om_contracts.ConsumerLag(group="feature", topic="market.trades.v1", partition=0, lag=3)
                        ],
                    ),
                    om_contracts.ServiceHealth(service="ingest", up=False, error="connection refused"),
                ],
            )
        ],
        "platform.dead-letters.v1": [
            DeadLetter(
                **ENV,
                consumer="feature",
                original_topic="market.trades.v1",
                original_partition=2,
                original_offset=1234,
                original_key="m-1",
                reason="invalid market.trades.v1 event: amount: Input should be greater than 0",
                payload_base64=base64.b64encode(b'{"amount": -1}').decode(),
            )
        ],
        "ingest.raw-markets.v1": [RawMarket(market_id="m-1", question="Rain?", close_at=T0 + timedelta(days=1))],
        "ingest.raw-trades.v1": [
            RawTrade(trade_id="t-1", market_id="m-1", user_id="u-1", outcome="YES", amount=5, shares=10, price=0.5)
        ],
        "ingest.raw-signals.v1": [RawSignal(signal_id="s-1", market_id="m-1", kind="news", source="wire", text="Rain")],
        "model.lifecycle.v1": [
            ModelLifecycleChanged(
                **ENV, model_version="m20260101-000000-1", state="production", previous_version=None, checksum="ab12"
            )
        ],
    }


EXAMPLES = examples()
CASES = [
    pytest.param(topic(name), event, id=f"{name}:{type(event).__name__}")
    for name, evs in EXAMPLES.items()
    for event in evs
    if "event_type" in type(event).model_fields  # raw intake records are tested in test_api_models.py
]


def raw(event: BaseModel, **changes: Any) -> bytes:
    """The event's JSON with some fields replaced (a value of ... removes the field)."""
    doc = json.loads(encode(event))
    for k, v in changes.items():
        if v is ...:
            del doc[k]
        else:
            doc[k] = v
    return json.dumps(doc).encode()


def schema_for(t: Topic) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{t.name}.json").read_text())


# --- coverage of the examples ---------------------------------------------------------------------


def test_there_is_an_example_of_every_event_type_of_every_topic() -> None:
    assert set(EXAMPLES) == {t.name for t in TOPICS}
    for t in TOPICS:
        assert {type(e) for e in EXAMPLES[t.name]} == set(message_models(t)), t.name


def test_event_types_are_unique_across_topics() -> None:
    # Raw intake topics carry records without an envelope (and so without an event_type).
    types = [
        m.model_fields["event_type"].default
        for t in TOPICS
        for m in message_models(t)
        if "event_type" in m.model_fields
    ]
    assert len(types) == len(set(types))


# --- round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "event"), CASES)
def test_encode_decode_round_trip(t: Topic, event: BaseModel) -> None:
    data = encode(event)
    assert isinstance(data, bytes)
    back = decode(t, data)
    assert type(back) is type(event)
    assert back == event
    assert encode(back) == data


@pytest.mark.parametrize(("t", "event"), CASES)
def test_encoded_times_are_utc_with_z(t: Topic, event: BaseModel) -> None:
    doc = json.loads(encode(event))
    assert doc["occurred_at"] == "2025-04-01T08:00:00Z"
    assert doc["produced_at"].endswith("Z")


@given(
    user_id=st.text(min_size=1, max_size=64),
    amount=st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False),
    shares=st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False),
    before=st.floats(0.0, 1.0),
    after=st.floats(0.0, 1.0),
    micros=st.integers(0, 10**12),
)
def test_any_valid_trade_round_trips_exactly(
    user_id: str, amount: float, shares: float, before: float, after: float, micros: int
) -> None:
    event = TradeExecuted(
        occurred_at=T0 + timedelta(microseconds=micros),
        producer="ingest",
        trade_id="t",
        market_id="m.1:x_y-z",
        user_id=user_id,
        outcome="YES",
        amount=amount,
        shares=shares,
        price_before=before,
        price_after=after,
    )
    assert decode(MARKET_TRADES, encode(event)) == event


# --- decode errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff\xfe", b'{"a": 1,}'])
def test_invalid_json_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(MARKET_TRADES, data)
    assert isinstance(info.value, ValueError)
    assert info.value.reason.startswith("invalid market.trades.v1 event: ")
    assert info.value.reason == str(info.value)


def test_json_that_is_not_an_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(MARKET_TRADES, b"[1, 2]")


TRADE = EXAMPLES["market.trades.v1"][0]
CREATED = EXAMPLES["market.lifecycle.v1"][0]


@pytest.mark.parametrize(
    ("t", "event", "changes", "field"),
    [
        (MARKET_TRADES, TRADE, {"amount": "lots"}, "amount"),
        (MARKET_TRADES, TRADE, {"amount": -1}, "amount"),
        (MARKET_TRADES, TRADE, {"price_after": 1.5}, "price_after"),
        (MARKET_TRADES, TRADE, {"outcome": "MAYBE"}, "outcome"),
        (MARKET_TRADES, TRADE, {"market_id": "has spaces"}, "market_id"),
        (MARKET_TRADES, TRADE, {"event_id": "not-a-uuid"}, "event_id"),
        (MARKET_TRADES, TRADE, {"occurred_at": "yesterday"}, "occurred_at"),
        (MARKET_TRADES, TRADE, {"shares": ...}, "shares"),
        (MARKET_TRADES, TRADE, {"unexpected": 1}, "unexpected"),
        (MARKET_LIFECYCLE, CREATED, {"close_at": "tomorrow"}, "close_at"),
        (MARKET_LIFECYCLE, CREATED, {"initial_price": [0.5]}, "initial_price"),
        (MARKET_LIFECYCLE, CREATED, {"question": ...}, "question"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_field_is_a_decode_error_naming_it(
    t: Topic, event: BaseModel, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(t, raw(event, **changes))
    assert f"{field}:" in info.value.reason
    assert info.value.reason.startswith(f"invalid {t.name} event: ")


def test_every_wrong_field_is_reported() -> None:
    with pytest.raises(DecodeError) as info:
        decode(MARKET_TRADES, raw(TRADE, amount="x", shares=0, user_id=...))
    for field in ("amount:", "shares:", "user_id:"):
        assert field in info.value.reason


@pytest.mark.parametrize(
    ("t", "event"), [(MARKET_LIFECYCLE, CREATED), (MARKET_TRADES, TRADE)], ids=["union", "single-model"]
)
def test_unknown_event_type_is_a_decode_error_naming_event_type(t: Topic, event: BaseModel) -> None:
    with pytest.raises(DecodeError) as info:
        decode(t, raw(event, event_type="market.reopened"))
    assert "event_type" in info.value.reason


def test_event_on_the_wrong_topic_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        decode(MARKET_LIFECYCLE, encode(TRADE))
    assert "trade.executed" in info.value.reason


# --- times ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["occurred_at", "produced_at"])
def test_naive_datetimes_are_rejected_on_decode(field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(MARKET_TRADES, raw(TRADE, **{field: "2025-04-01T08:00:00"}))
    assert field in info.value.reason
    assert "timezone" in info.value.reason


def test_naive_close_at_is_rejected_on_decode() -> None:
    with pytest.raises(DecodeError) as info:
        decode(MARKET_LIFECYCLE, raw(CREATED, close_at="2025-04-02T08:00:00"))
    assert "close_at" in info.value.reason


def test_naive_datetimes_are_rejected_by_the_models() -> None:
    with pytest.raises(ValidationError):
        MarketClosed(occurred_at=datetime(2025, 4, 1, 8, 0), producer="x", market_id="m")
    with pytest.raises(ValidationError):
        MarketClosed(occurred_at=T0, produced_at=datetime(2025, 4, 1, 8, 0), producer="x", market_id="m")


def test_aware_envelope_times_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    e = MarketClosed(
        occurred_at=datetime(2025, 4, 1, 10, 0, tzinfo=plus_two),
        produced_at=datetime(2025, 4, 1, 3, 30, tzinfo=timezone(timedelta(hours=-5))),
        producer="x",
        market_id="m",
    )
    assert e.occurred_at == T0 and e.occurred_at.tzinfo is UTC
    assert e.produced_at == datetime(2025, 4, 1, 8, 30, tzinfo=UTC) and e.produced_at.tzinfo is UTC
    decoded = decode(MARKET_TRADES, raw(TRADE, occurred_at="2025-04-01T01:00:00-07:00"))
    assert decoded.occurred_at == T0
    assert decoded.occurred_at.utcoffset() == timedelta(0)


def test_close_at_keeps_its_instant() -> None:
    decoded = decode(MARKET_LIFECYCLE, raw(CREATED, close_at="2025-04-02T10:00:00+02:00"))
    assert decoded.close_at == datetime(2025, 4, 2, 8, 0, tzinfo=UTC)


def test_produced_at_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC)
    e = MarketClosed(**ENV, market_id="m")
    assert before <= e.produced_at <= datetime.now(UTC)
    assert e.produced_at.utcoffset() == timedelta(0)
    assert om_contracts.utcnow().utcoffset() == timedelta(0)


# --- envelope -------------------------------------------------------------------------------------


def test_envelope_defaults() -> None:
    a, b = MarketClosed(**ENV, market_id="m"), MarketClosed(**ENV, market_id="m")
    assert a.event_id != b.event_id and a.event_id.version == 4
    assert a.schema_version == 1
    assert a.event_type == "market.closed"


def test_events_are_frozen_and_refuse_unknown_fields() -> None:
    e = MarketClosed(**ENV, market_id="m")
    with pytest.raises(ValidationError):
        e.market_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        MarketClosed(**ENV, market_id="m", colour="red")


@pytest.mark.parametrize("producer", ["", None])
def test_producer_is_required(producer: str | None) -> None:
    with pytest.raises(ValidationError):
        MarketClosed(occurred_at=T0, producer=producer, market_id="m")


# --- derived ids ----------------------------------------------------------------------------------


def test_derived_event_id_is_deterministic() -> None:
    source = uuid.UUID("0b6f0d6c-6a43-4a47-9a1e-2f8a1b7f3c11")
    first = derived_event_id(source, "feature")
    assert first == derived_event_id(uuid.UUID(str(source)), "feature")
    assert first.version == 5
    assert first != source


def test_derived_event_id_depends_on_source_and_producer() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    ids = {
        derived_event_id(a, "feature"),
        derived_event_id(b, "feature"),
        derived_event_id(a, "prediction"),
        derived_event_id(b, "prediction"),
    }
    assert len(ids) == 4


# --- topics ---------------------------------------------------------------------------------------

TOPIC_NAME = re.compile(r"^[a-z]+(\.[a-z-]+)+\.v[0-9]+$")


@pytest.mark.parametrize("t", TOPICS, ids=lambda t: t.name)
def test_topic_names_follow_the_convention(t: Topic) -> None:
    assert TOPIC_NAME.fullmatch(t.name)
    assert "_" not in t.name
    assert topic(t.name) is t


def test_topic_names_are_unique_and_unknown_names_fail() -> None:
    names = [t.name for t in TOPICS]
    assert len(names) == len(set(names))
    with pytest.raises(KeyError):
        topic("market.trades.v2")


@pytest.mark.parametrize("t", TOPICS, ids=lambda t: t.name)
def test_topic_key_field_exists_on_every_model_it_carries(t: Topic) -> None:
    models = message_models(t)
    assert models
    for model in models:
        assert t.key in model.model_fields, f"{model.__name__} has no {t.key}"
    for event in EXAMPLES[t.name]:
        assert key_of(t, event) == str(getattr(event, t.key)).encode()
        assert key_of(t, event)


def test_market_topics_are_keyed_by_market() -> None:
    assert key_of(MARKET_TRADES, TRADE) == b"m-1"
    assert key_of(topic("analytics.system.v1"), EXAMPLES["analytics.system.v1"][0]) == (
        b"analytics.system_metrics_updated"
    )


@pytest.mark.parametrize("t", TOPICS, ids=lambda t: t.name)
def test_topic_metadata_is_sane(t: Topic) -> None:
    assert t.visibility in ("public", "internal")
    assert t.partitions >= 1
    assert t.retention_ms == -1 or t.retention_ms > 0
    assert t.producer not in t.consumers


# --- JSON Schemas ---------------------------------------------------------------------------------


def test_there_is_one_committed_schema_per_topic() -> None:
    assert SCHEMAS == OUT_DIR / "schemas"
    assert {p.name for p in SCHEMAS.glob("*.json")} == {f"{t.name}.json" for t in TOPICS}


@pytest.mark.parametrize("t", TOPICS, ids=lambda t: t.name)
def test_committed_schema_is_a_valid_draft_2020_12_schema(t: Topic) -> None:
    schema = schema_for(t)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == t.name


@pytest.mark.parametrize(("t", "event"), CASES)
def test_committed_schema_accepts_the_encoded_example(t: Topic, event: BaseModel) -> None:
    validator = Draft202012Validator(schema_for(t), format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [e.message for e in validator.iter_errors(json.loads(encode(event)))]
    assert errors == []


@pytest.mark.parametrize(
    ("t", "event", "changes"),
    [
        (MARKET_TRADES, TRADE, {"price_after": 1.5}),
        (MARKET_TRADES, TRADE, {"amount": "lots"}),
        (MARKET_TRADES, TRADE, {"shares": ...}),
        (MARKET_TRADES, TRADE, {"unexpected": 1}),
        (MARKET_LIFECYCLE, CREATED, {"event_type": "market.reopened"}),
        (MARKET_LIFECYCLE, CREATED, {"question": ""}),
    ],
    ids=[
        "price-out-of-range",
        "amount-type",
        "missing-shares",
        "extra-field",
        "unknown-event-type",
        "empty-question",
    ],
)
def test_committed_schema_rejects_what_decode_rejects(t: Topic, event: BaseModel, changes: dict[str, Any]) -> None:
    doc = json.loads(raw(event, **changes))
    assert not Draft202012Validator(schema_for(t)).is_valid(doc)
    with pytest.raises(DecodeError):
        decode(t, json.dumps(doc).encode())


def test_committed_documents_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
