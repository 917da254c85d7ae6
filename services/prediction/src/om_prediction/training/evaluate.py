"""Scores against the market price at the same timestamps: Brier, log loss, ECE, AUC, and the paired Brier
difference model - market with a market-level bootstrap 95 % interval (rows of one market move together)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

EPS = 1e-6


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over `bins` equal-width bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(p)) if len(p) else float("nan")


def auc(p: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


@dataclass(frozen=True)
class Scores:
    rows: int
    markets: int
    brier: float
    log_loss: float
    ece: float
    auc: float
    market_brier: float
    market_log_loss: float
    market_ece: float
    market_auc: float
    brier_diff: float  # model - market; negative means the model is better
    brier_diff_low: float
    brier_diff_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_bootstrap(
    diff: np.ndarray, markets: np.ndarray, reps: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean per-row difference and its 95 % interval, resampling whole markets."""
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    _, inverse = np.unique(markets, return_inverse=True)
    sums = np.bincount(inverse, weights=diff)
    counts = np.bincount(inverse).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(reps, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(diff.mean()), float(low), float(high)


def score(p: np.ndarray, market: np.ndarray, y: np.ndarray, markets: np.ndarray, seed: int = 0) -> Scores:
    diff, low, high = paired_bootstrap((p - y) ** 2 - (market - y) ** 2, markets, seed=seed)
    return Scores(
        rows=len(y),
        markets=len(set(markets.tolist())),
        brier=brier(p, y),
        log_loss=log_loss(p, y),
        ece=ece(p, y),
        auc=auc(p, y),
        market_brier=brier(market, y),
        market_log_loss=log_loss(market, y),
        market_ece=ece(market, y),
        market_auc=auc(market, y),
        brier_diff=diff,
        brier_diff_low=low,
        brier_diff_high=high,
    )


def confidence_check(p: np.ndarray, confidence: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Brier of the most and of the least confident fifth of rows."""
    order = np.argsort(confidence)
    k = max(1, len(order) // 5)
    return brier(p[order[-k:]], y[order[-k:]]), brier(p[order[:k]], y[order[:k]])
