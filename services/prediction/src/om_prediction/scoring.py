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

from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from om_contracts import MarketFeatures

if TYPE_CHECKING:  # the model stack (LightGBM, scikit-learn) loads only when a model does: fast service start
    from om_prediction.model import Ensemble


BASELINE_VERSION = "baseline-market-price"
TOP_CONTRIBUTIONS = 5
RiskLevel = Literal["low", "medium", "high"]
SERIOUS = frozenset({"few_participants", "model_uncertain"})


class Contribution(NamedTuple):
    """One feature's effect on the log-odds: plain values, validated once as part of the prediction event."""

    feature: str
    value: float | None
    contribution: float


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond per field
class Score:
    probability: float
    confidence: float
    risk_level: RiskLevel
    model_version: str
    contributions: list[Contribution]
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
        contributions=[Contribution("current_price", p, p - 0.5)],
        risk_reasons=risk_reasons(p, confidence, features, baseline=True),
    )


#: The model path's risk reasons in their order, as bits of a per-row mask (computed for a whole batch in numpy).
_MODEL_REASONS = (
    "few_participants",
    "thin_volume",
    "near_coin_flip",
    "model_uncertain",
    "disagrees_with_market",
    "missing_features",
)
#: mask -> (reasons, risk level): every combination, so a row's reasons and level are one list lookup.
_RISK_BY_MASK: list[tuple[tuple[str, ...], RiskLevel]] = [
    (reasons, risk_level_of(reasons))
    for reasons in (
        tuple(r for bit, r in enumerate(_MODEL_REASONS) if mask >> bit & 1) for mask in range(1 << len(_MODEL_REASONS))
    )
]
_RISK_COLUMNS = ("participant_count", "total_volume", "current_price")
_RISK_INPUTS = attrgetter(*_RISK_COLUMNS)
_new_contribution = partial(tuple.__new__, Contribution)  # a Contribution from a 3-tuple, without a Python frame


def score_batch(model: Ensemble | None, version: str, batch: list[MarketFeatures]) -> list[Score]:
    """Score many vectors in one call (micro-batching): the baseline without a model.

    Everything per batch is numpy: the matrix, imputation, the model, the top contributions and the risk reasons
    (as a bit mask per row, looked up in `_RISK_BY_MASK`; the same rules as `risk_reasons`). Per row only the
    result objects are built (plain tuples: the prediction event validates them once).
    """
    if model is None or not batch:
        return [baseline(f) for f in batch]
    from om_prediction.model import impute  # loaded already with the model

    x_raw = feature_matrix(model.features, batch)
    missing = np.isnan(x_raw)
    out = model.predict(impute(x_raw, model.medians), explain=True)
    if out.contributions is None:  # explain=True always fills them
        raise RuntimeError("the model returned no contributions")
    n, width = out.contributions.shape
    k = min(TOP_CONTRIBUTIONS, width)
    size = np.abs(out.contributions)
    top = np.argpartition(-size, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(size, top, axis=1), axis=1, kind="stable"), axis=1)
    # the top k of every row as flat lists: name, the vector's own value (None where it had none), contribution
    values = np.where(missing, np.array(None), x_raw)
    flat = list(
        map(
            _new_contribution,
            zip(
                np.array(model.features, dtype=object)[top].ravel().tolist(),
                np.take_along_axis(values, top, axis=1).ravel().tolist(),
                np.take_along_axis(out.contributions, top, axis=1).ravel().tolist(),
                strict=True,
            ),
        )
    )
    p, c = out.probability, out.confidence
    if all(name in model.features for name in _RISK_COLUMNS):  # the model's inputs hold them (required fields)
        traders, volume, price = (x_raw[:, model.features.index(name)] for name in _RISK_COLUMNS)
    else:
        traders, volume, price = np.array(list(map(_RISK_INPUTS, batch)), dtype=np.float64).reshape(n, 3).T
    masks = (
        (traders < 3)
        | (volume < 100) << 1
        | ((p >= 0.4) & (p <= 0.6)) << 2
        | (c < 0.6) << 3
        | (np.abs(p - price) > 0.15) << 4
        | (missing.sum(axis=1) >= 3) << 5
    )
    risks = _RISK_BY_MASK
    return [
        Score(p_i, c_i, risks[m][1], version, flat[i * k : i * k + k], risks[m][0])
        for i, (p_i, c_i, m) in enumerate(zip(p.tolist(), c.tolist(), masks.tolist(), strict=True))
    ]


def feature_matrix(names: tuple[str, ...], batch: list[MarketFeatures]) -> np.ndarray:
    """Validated feature vectors to a float matrix in the model's order; None and non-finite values are NaN."""
    rows: list[Any]
    try:
        rows = list(map(attrgetter(*names), batch))  # one C call per row
    except AttributeError:  # a name the vectors do not carry: None, like any missing value
        rows = [[getattr(f, name, None) for name in names] for f in batch]
    x = np.array(rows, dtype=np.float64)
    x = x.reshape(len(batch), len(names))
    x[~np.isfinite(x)] = np.nan
    return x
