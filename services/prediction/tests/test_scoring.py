"""prediction's baseline scoring and the prediction event built from a feature vector: the market price is
the probability (labelled as the baseline), confidence and risk follow fixed rules, and ids are derived."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_contracts import (
    FeatureVectorComputed,
    MarketFeatures,
    PredictionMade,
    decode,
    derived_event_id,
    encode,
)
from om_contracts.topics import FEATURE_VECTORS, PREDICTIONS
from om_prediction import scoring
from om_prediction.handlers import PRODUCER, prediction_for

T0 = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def feats(price: float = 0.5, participants: int = 20, **extra: object) -> MarketFeatures:
    return MarketFeatures(
        current_price=price, total_volume=100.0, participant_count=participants, trade_count=30, **extra
    )


def vector_event(**overrides: object) -> FeatureVectorComputed:
    fields: dict[str, object] = {
        "occurred_at": T0,
        "producer": "feature",
        "market_id": "m-1",
        "category": "sports",
        "features": feats(0.72),
        "source_event_id": str(uuid.uuid4()),
    }
    return FeatureVectorComputed(**(fields | overrides))


# --- baseline ---------------------------------------------------------------------------------------


@given(probabilities, st.integers(0, 1000))
def test_baseline_probability_is_the_market_price(price: float, participants: int) -> None:
    score = scoring.baseline(feats(price, participants))
    assert score.probability == price
    assert score.model_version == "baseline-market-price" == scoring.BASELINE_VERSION
    assert score.confidence == max(price, 1.0 - price)
    assert score.risk_level == scoring.risk_level(score.confidence, participants)


def test_baseline_ignores_other_features() -> None:
    plain = scoring.baseline(feats(0.3))
    rich = scoring.baseline(feats(0.3, social_sentiment=1.0, news_sentiment=-1.0, momentum_indicator=0.2))
    assert (rich.probability, rich.confidence) == (plain.probability, plain.confidence)
    assert rich.risk_level == plain.risk_level == "medium"


def test_baseline_explains_itself_with_the_price() -> None:
    score = scoring.baseline(feats(0.8))
    assert len(score.contributions) == 1
    c = score.contributions[0]
    assert (c.feature, c.value) == ("current_price", 0.8)
    assert c.contribution == pytest.approx(0.3)
    assert scoring.baseline(feats(0.25)).contributions[0].contribution == pytest.approx(-0.25)


# --- confidence -------------------------------------------------------------------------------------


@given(probabilities)
def test_confidence_is_max_of_p_and_its_complement(p: float) -> None:
    c = scoring.confidence_of(p)
    assert c == max(p, 1.0 - p)
    assert 0.5 <= c <= 1.0
    assert c == pytest.approx(scoring.confidence_of(1.0 - p), abs=1e-15)  # symmetric in YES/NO


@pytest.mark.parametrize(("p", "expected"), [(0.0, 1.0), (0.5, 0.5), (0.7, 0.7), (0.3, 0.7), (1.0, 1.0)])
def test_confidence_examples(p: float, expected: float) -> None:
    assert scoring.confidence_of(p) == pytest.approx(expected)


# --- risk level -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "participants", "expected"),
    [
        (0.5, 100, "high"),
        (0.599, 100, "high"),  # near a coin flip
        (0.6, 100, "medium"),
        (0.799, 100, "medium"),
        (0.8, 100, "low"),
        (1.0, 10, "low"),
        (1.0, 9, "medium"),  # too few traders to trust a confident price
        (1.0, 3, "medium"),
        (1.0, 2, "high"),
        (0.95, 0, "high"),
        (0.7, 2, "high"),
        (0.59, 50, "high"),
    ],
)
def test_risk_level_thresholds(confidence: float, participants: int, expected: str) -> None:
    assert scoring.risk_level(confidence, participants) == expected


@pytest.mark.parametrize(("price", "expected"), [(0.4, "medium"), (0.2, "low"), (0.5, "high"), (0.95, "low")])
def test_risk_level_of_prices_at_thresholds(price: float, expected: str) -> None:
    # 1 - 0.4 is 0.6 and 1 - 0.2 is 0.8 exactly in binary floating point: on the boundary, not below it.
    assert scoring.baseline(feats(price, 10)).risk_level == expected


@given(st.floats(0.5, 1.0), st.integers(0, 1000), st.integers(0, 1000))
def test_more_participants_never_raise_risk(confidence: float, a: int, b: int) -> None:
    order = {"low": 0, "medium": 1, "high": 2}
    few, many = sorted((a, b))
    assert order[scoring.risk_level(confidence, many)] <= order[scoring.risk_level(confidence, few)]


# --- prediction_for ---------------------------------------------------------------------------------


def test_prediction_copies_the_vector_and_the_score() -> None:
    v = vector_event()
    p = prediction_for(v)
    assert isinstance(p, PredictionMade)
    assert p.market_id == "m-1"
    assert p.producer == PRODUCER == "prediction"
    assert p.probability == 0.72
    assert p.confidence == 0.72
    assert p.risk_level == "medium"  # 0.72 < 0.8
    assert p.model_version == "baseline-market-price"
    assert p.features_as_of == v.occurred_at == T0
    assert p.occurred_at == T0
    assert [c.feature for c in p.contributions] == ["current_price"]


def test_prediction_id_is_derived_from_the_vector_id() -> None:
    v = vector_event()
    first, again = prediction_for(v), prediction_for(v)
    assert first.event_id == again.event_id == derived_event_id(v.event_id, "prediction")
    assert first.event_id != v.event_id
    other = prediction_for(vector_event(features=v.features, source_event_id=v.source_event_id))
    assert other.event_id != first.event_id


def test_redelivered_vector_gives_the_same_prediction_id() -> None:
    v = vector_event()
    redelivered = decode(FEATURE_VECTORS, encode(v))
    assert prediction_for(redelivered).event_id == prediction_for(v).event_id


def test_features_as_of_is_in_utc_even_for_offset_input() -> None:
    v = vector_event(occurred_at=datetime(2025, 5, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))))
    p = prediction_for(v)
    assert p.features_as_of == T0
    assert p.features_as_of.utcoffset() == timedelta(0)


def test_prediction_round_trips_on_its_topic() -> None:
    p = prediction_for(vector_event())
    assert decode(PREDICTIONS, encode(p)) == p


# --- the model path's risk reasons (docs/prediction.md) ---------------------------------------------


@pytest.mark.parametrize(
    ("p", "confidence", "traders", "volume", "price", "imputed", "reasons", "level"),
    [
        (0.9, 0.9, 20, 500, 0.85, 0, (), "low"),
        (0.9, 0.9, 2, 500, 0.85, 0, ("few_participants",), "high"),
        (0.9, 0.9, 3, 99.9, 0.85, 0, ("thin_volume",), "medium"),
        (0.6, 0.9, 20, 100, 0.6, 0, ("near_coin_flip",), "medium"),
        (0.61, 0.59, 20, 100, 0.6, 0, ("model_uncertain",), "high"),
        (0.9, 0.6, 20, 100, 0.74, 0, ("disagrees_with_market",), "medium"),
        (0.9, 0.6, 20, 100, 0.76, 3, ("missing_features",), "medium"),
        (0.9, 0.6, 20, 100, 0.76, 2, (), "low"),
        (0.5, 0.9, 20, 50, 0.5, 0, ("thin_volume", "near_coin_flip"), "high"),
        (0.9, 0.9, 20, 50, 0.5, 5, ("thin_volume", "disagrees_with_market", "missing_features"), "high"),
    ],
)
def test_model_risk_reasons_follow_the_documented_thresholds(
    p: float, confidence: float, traders: int, volume: float, price: float, imputed: int, reasons: tuple, level: str
) -> None:
    f = MarketFeatures(current_price=price, total_volume=volume, participant_count=traders, trade_count=10)
    got = scoring.risk_reasons(p, confidence, f, baseline=False, imputed=imputed)
    assert got == reasons
    assert scoring.risk_level_of(got) == level
    assert scoring.risk_level_of(("baseline_only", *got)) == level  # the label alone is no risk
