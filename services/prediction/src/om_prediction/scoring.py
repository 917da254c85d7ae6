"""Turning a feature vector into a prediction. Pure: no Kafka, no I/O.

Until a trained model is registered, the market price is the prediction, labelled as such
(`model_version = "baseline-market-price"`): the crowd's probability, never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from om_contracts import FeatureContribution, MarketFeatures

BASELINE_VERSION = "baseline-market-price"


@dataclass(frozen=True)
class Score:
    probability: float
    confidence: float
    risk_level: Literal["low", "medium", "high"]
    model_version: str
    contributions: list[FeatureContribution]


def confidence_of(probability: float) -> float:
    """How likely the predicted outcome is: max(p, 1 - p), in [0.5, 1]."""
    return max(probability, 1.0 - probability)


def risk_level(confidence: float, participant_count: int) -> Literal["low", "medium", "high"]:
    """High when the call is near a coin flip or too few people have traded to trust the price."""
    if confidence < 0.6 or participant_count < 3:
        return "high"
    if confidence < 0.8 or participant_count < 10:
        return "medium"
    return "low"


def baseline(features: MarketFeatures) -> Score:
    p = features.current_price
    confidence = confidence_of(p)
    return Score(
        probability=p,
        confidence=confidence,
        risk_level=risk_level(confidence, features.participant_count),
        model_version=BASELINE_VERSION,
        contributions=[FeatureContribution(feature="current_price", value=p, contribution=p - 0.5)],
    )
