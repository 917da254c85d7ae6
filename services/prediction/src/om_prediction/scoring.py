"""Turning feature vectors into predictions. Pure: no Kafka, no I/O.

Until a trained model is promoted, the market price is the prediction, labelled as such
(`model_version = "baseline-market-price"`): the crowd's probability, never a made-up number. With a model,
a batch of vectors is scored at once (`score_batch`): calibrated probability, confidence from the ensemble's
spread, risk level with enumerated reasons, and the top contributions in log-odds.

Risk reasons (docs/prediction.md): `baseline_only`, `few_participants` (< 3), `thin_volume` (< 100),
`near_coin_flip` (0.4 <= p <= 0.6), `model_uncertain` (confidence < 0.6), `disagrees_with_market`
(|p - price| > 0.15), `missing_features` (3 or more imputed). High: any of few_participants, model_uncertain,
near_coin_flip with another reason, or 3+ reasons; medium: any reason; low: none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from om_contracts import FeatureContribution, MarketFeatures

if TYPE_CHECKING:  # the model stack (LightGBM, scikit-learn) loads only when a model does: fast service start
    from om_prediction.model import Ensemble

BASELINE_VERSION = "baseline-market-price"
TOP_CONTRIBUTIONS = 5
RiskLevel = Literal["low", "medium", "high"]
SERIOUS = frozenset({"few_participants", "model_uncertain"})


@dataclass(frozen=True)
class Score:
    probability: float
    confidence: float
    risk_level: RiskLevel
    model_version: str
    contributions: list[FeatureContribution]
    risk_reasons: tuple[str, ...] = ()


def confidence_of(probability: float) -> float:
    """How likely the predicted outcome is: max(p, 1 - p), in [0.5, 1] (the baseline's confidence)."""
    return max(probability, 1.0 - probability)


def risk_reasons(
    probability: float, confidence: float, features: MarketFeatures, *, baseline: bool, imputed: int = 0
) -> tuple[str, ...]:
    reasons = []
    if baseline:
        reasons.append("baseline_only")
    if features.participant_count < 3:
        reasons.append("few_participants")
    if features.total_volume < 100:
        reasons.append("thin_volume")
    if 0.4 <= probability <= 0.6:
        reasons.append("near_coin_flip")
    if not baseline and confidence < 0.6:
        reasons.append("model_uncertain")
    if abs(probability - features.current_price) > 0.15:
        reasons.append("disagrees_with_market")
    if imputed >= 3:
        reasons.append("missing_features")
    return tuple(reasons)


def risk_level_of(reasons: tuple[str, ...]) -> RiskLevel:
    real = [r for r in reasons if r != "baseline_only"]
    if SERIOUS & set(real) or len(real) >= 3 or ("near_coin_flip" in real and len(real) >= 2):
        return "high"
    return "medium" if real else "low"


def risk_level(confidence: float, participant_count: int) -> RiskLevel:
    """The baseline's rule: high near a coin flip or with too few traders to trust the price."""
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
        risk_reasons=risk_reasons(p, confidence, features, baseline=True),
    )


def score_batch(model: Ensemble | None, version: str, batch: list[MarketFeatures]) -> list[Score]:
    """Score many vectors in one call (micro-batching): the baseline without a model."""
    if model is None or not batch:
        return [baseline(f) for f in batch]
    rows = [f.model_dump() for f in batch]
    x_raw = np.array([[_num(r.get(name)) for name in model.features] for r in rows], dtype=np.float64)
    imputed = np.isnan(x_raw).sum(axis=1)
    out = model.predict(model.matrix(rows), explain=True)
    assert out.contributions is not None
    scores = []
    for i, features in enumerate(batch):
        p, c = float(out.probability[i]), float(out.confidence[i])
        top = np.argsort(-np.abs(out.contributions[i]))[:TOP_CONTRIBUTIONS]
        reasons = risk_reasons(p, c, features, baseline=False, imputed=int(imputed[i]))
        scores.append(
            Score(
                probability=p,
                confidence=c,
                risk_level=risk_level_of(reasons),
                model_version=version,
                contributions=[
                    FeatureContribution(
                        feature=model.features[j],
                        value=None if math.isnan(x_raw[i, j]) else float(x_raw[i, j]),
                        contribution=float(out.contributions[i, j]),
                    )
                    for j in top
                ],
                risk_reasons=reasons,
            )
        )
    return scores


def _num(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan
