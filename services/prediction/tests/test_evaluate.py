"""The evaluation against the market (issue item 4): Brier, log loss, ECE over 10 bins, AUC, the paired Brier
difference with a bootstrap over markets (not rows), and the confidence check's fifths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from om_prediction.training.evaluate import auc, brier, confidence_check, ece, log_loss, paired_bootstrap, score


def test_brier_and_log_loss_by_hand() -> None:
    p, y = np.array([0.8, 0.3]), np.array([1.0, 0.0])
    assert brier(p, y) == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert log_loss(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert math.isfinite(log_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0])))  # clipped, not infinite


def test_ece_weights_each_of_ten_bins_by_its_rows() -> None:
    y = np.array([1.0, 1.0, 1.0, 0.0])
    assert ece(np.full(4, 0.75), y) == pytest.approx(0.0)  # one bin, calibrated
    assert ece(np.full(4, 0.95), np.zeros(4)) == pytest.approx(0.95)
    # bin 0.1-0.2 (2 rows, mean 0.15, observed 0.5) and bin 0.9-1.0 (2 rows, mean 0.95, observed 1.0)
    p, y = np.array([0.1, 0.2 - 1e-9, 0.95, 1.0]), np.array([0.0, 1.0, 1.0, 1.0])
    assert ece(p, y) == pytest.approx(0.5 * abs(0.15 - 0.5) + 0.5 * abs(0.975 - 1.0), abs=1e-6)


def test_auc_is_undefined_with_one_outcome() -> None:
    assert math.isnan(auc(np.array([0.2, 0.7]), np.ones(2)))
    assert auc(np.array([0.2, 0.7]), np.array([0.0, 1.0])) == 1.0


def test_bootstrap_resamples_markets_not_rows() -> None:
    """One market with 1 row (diff 1) and one with 99 rows (diff 0): the mean is 0.01, but with two markets the
    resampled means are 0 (B twice), 1 (A twice) or 0.01: the 95 % interval spans [0, 1]. Resampling rows would
    have given a narrow interval around 0.01, as if 100 independent observations."""
    diff = np.array([1.0] + [0.0] * 99)
    markets = np.array(["a"] + ["b"] * 99)
    mean, low, high = paired_bootstrap(diff, markets, reps=2000, seed=1)
    assert mean == pytest.approx(0.01)
    assert low == 0.0 and high == 1.0
    same = paired_bootstrap(np.full(50, -0.02), np.repeat(np.arange(10), 5))
    assert same == pytest.approx((-0.02, -0.02, -0.02))
    assert paired_bootstrap(diff, markets, seed=3) == paired_bootstrap(diff, markets, seed=3)  # seeded


def test_score_pairs_the_model_with_the_market_at_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.5).astype(float)
    market = np.clip(y * 0.6 + 0.2 + rng.normal(0, 0.1, 400), 0.01, 0.99)
    model = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.05, 400), 0.01, 0.99)
    s = score(model, market, y, np.repeat(np.arange(40), 10))
    assert (s.rows, s.markets) == (400, 40)
    assert s.brier_diff == pytest.approx(s.brier - s.market_brier)
    assert s.brier_diff_low <= s.brier_diff <= s.brier_diff_high < 0  # clearly better than this market


def test_confidence_check_takes_the_most_and_least_confident_fifths() -> None:
    p = np.array([0.9, 0.9, 0.5, 0.5, 0.1, 0.1, 0.6, 0.6, 0.4, 0.4])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    confidence = np.array([0.99, 0.98, 0.1, 0.2, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7])
    most, least = confidence_check(p, confidence, y)
    assert most == pytest.approx(0.01) and least == pytest.approx(0.25)
