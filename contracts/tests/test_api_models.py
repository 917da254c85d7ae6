"""The shared write models (om_contracts.api): finite numbers only, bounded amounts and shares, one event time
under either name, and `amount_estimated` carried into `TradeExecuted`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from om_contracts import DecodeError, TradeExecuted, decode, topic
from om_contracts.api import (
    MAX_AMOUNT,
    MAX_SHARES,
    CancelIn,
    CloseIn,
    ResolveIn,
    SignalBatchIn,
    SignalIn,
    TradeBatchIn,
    TradeIn,
)
from om_contracts.topics import MARKET_TRADES

T = datetime(2026, 1, 1, tzinfo=UTC)
TRADE = {"market_id": "m-1", "user_id": "u", "outcome": "YES", "amount": 10.0, "shares": 20.0, "price": 0.5}


def locs(exc: ValidationError) -> list[tuple]:
    return [e["loc"] for e in exc.errors()]


@pytest.mark.parametrize("spelling", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("name", ["amount", "shares", "price"])
def test_non_finite_numbers_in_json_are_refused_naming_the_field(spelling: str, name: str) -> None:
    body = json.dumps(TRADE).replace(f'"{name}": {TRADE[name]}', f'"{name}": {spelling}')
    with pytest.raises(ValidationError) as info:
        TradeIn.model_validate(json.loads(body))  # json.loads is what parses request bodies
    assert (name,) in locs(info.value)


def test_non_finite_sentiment_and_resolution_price_are_refused() -> None:
    with pytest.raises(ValidationError):
        SignalIn(market_id="m", kind="news", source="s", text="t", sentiment=float("nan"))
    with pytest.raises(ValidationError):
        ResolveIn(resolution="MKT", resolution_price=float("inf"))


@pytest.mark.parametrize(("name", "limit"), [("amount", MAX_AMOUNT), ("shares", MAX_SHARES)])
def test_amount_and_shares_are_bounded(name: str, limit: float) -> None:
    assert getattr(TradeIn(**{**TRADE, name: limit}), name) == limit
    with pytest.raises(ValidationError) as info:
        TradeIn(**{**TRADE, name: limit * 1.0001})
    assert (name,) in locs(info.value)


def test_the_event_time_may_be_sent_under_either_name_but_not_two_different_ones() -> None:
    assert TradeIn(**TRADE, occurred_at=T).event_time == T
    assert TradeIn(**TRADE, executed_at=T).event_time == T
    assert TradeIn(**TRADE, executed_at=T, occurred_at=T).event_time == T
    assert TradeIn(**TRADE).event_time is None
    with pytest.raises(ValidationError, match="differ"):
        TradeIn(**TRADE, executed_at=T, occurred_at=T + timedelta(seconds=1))


def test_every_write_takes_an_event_time() -> None:
    for model, fields in [
        (CloseIn, {}),
        (CancelIn, {}),
        (ResolveIn, {"resolution": "YES"}),
        (SignalIn, {"market_id": "m", "kind": "news", "source": "s", "text": "t"}),
        (TradeBatchIn, {"trades": [TRADE]}),
        (SignalBatchIn, {"signals": [{"market_id": "m", "kind": "news", "source": "s", "text": "t"}]}),
    ]:
        assert model(**fields, occurred_at=T).occurred_at == T
        with pytest.raises(ValidationError):
            model(**fields, occurred_at="2026-01-01T00:00:00")  # a time without a zone is ambiguous


def test_amount_estimated_defaults_to_false_and_travels_in_the_event() -> None:
    assert TradeIn(**TRADE).amount_estimated is False
    event = TradeExecuted(
        occurred_at=T,
        producer="ingest",
        trade_id="t-1",
        market_id="m-1",
        user_id="u",
        outcome="YES",
        amount=10.0,
        shares=20.0,
        price_before=0.4,
        price_after=0.5,
        amount_estimated=True,
    )
    assert decode(MARKET_TRADES, event.model_dump_json().encode()).amount_estimated is True
    older = json.loads(event.model_dump_json())
    del older["amount_estimated"]  # events written before the field existed still decode
    assert decode(MARKET_TRADES, json.dumps(older).encode()).amount_estimated is False


def test_trade_event_refuses_an_infinite_amount() -> None:
    payload = TradeExecuted(
        occurred_at=T,
        producer="ingest",
        trade_id="t-1",
        market_id="m-1",
        user_id="u",
        outcome="YES",
        amount=10.0,
        shares=20.0,
        price_before=0.4,
        price_after=0.5,
    ).model_dump_json()
    with pytest.raises(ValueError, match="amount"):
        decode(MARKET_TRADES, payload.replace('"amount":10.0', '"amount":1e999').encode())


# --- raw intake records ---------------------------------------------------------------------------------

RAW_EXAMPLES = {
    "ingest.raw-markets.v1": b'{"market_id": "m-1", "question": "Rain?", "close_at": "2026-02-01T00:00:00Z"}',
    "ingest.raw-trades.v1": json.dumps({**TRADE, "trade_id": "t-1"}).encode(),
    "ingest.raw-signals.v1": b'{"signal_id": "s-1", "market_id": "m-1", "kind": "news", "source": "w", "text": "x"}',
}
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@pytest.mark.parametrize("name", sorted(RAW_EXAMPLES))
def test_raw_records_decode_and_match_their_committed_schema(name: str) -> None:
    record = decode(topic(name), RAW_EXAMPLES[name])
    assert record.market_id == "m-1"
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert [e.message for e in validator.iter_errors(json.loads(RAW_EXAMPLES[name]))] == []


@pytest.mark.parametrize(
    ("name", "id_field"),
    [
        ("ingest.raw-trades.v1", "trade_id"),
        ("ingest.raw-signals.v1", "signal_id"),
        ("ingest.raw-markets.v1", "market_id"),
    ],
)
def test_raw_records_need_their_id_so_a_redelivery_is_a_replay(name: str, id_field: str) -> None:
    doc = json.loads(RAW_EXAMPLES[name])
    del doc[id_field]
    with pytest.raises(DecodeError, match=id_field):
        decode(topic(name), json.dumps(doc).encode())


def test_raw_trades_refuse_non_finite_numbers_with_a_reason_naming_the_field() -> None:
    with pytest.raises(DecodeError, match="amount"):
        decode(topic("ingest.raw-trades.v1"), RAW_EXAMPLES["ingest.raw-trades.v1"].replace(b"10.0", b"NaN", 1))
