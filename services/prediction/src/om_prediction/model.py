"""The trained model: a Random Forest and a LightGBM booster stacked in log-odds, then calibrated.

Pure computation on numpy arrays (no I/O): `fit_ensemble` learns it, `Ensemble.predict` scores a batch.

* Stacking: the uncalibrated ensemble's log-odds are ``z = w0 + w_rf * p_rf + w_gbm * f_gbm`` (``p_rf`` the
  forest's probability, ``f_gbm`` the booster's raw log-odds), with weights learnt by logistic regression on a
  validation fold the members never saw.
* Calibration: isotonic regression of ``sigmoid(z)`` on the same fold, clipped to [0.01, 0.99].
* Contributions: the booster's ``pred_contrib`` (tree SHAP) scaled by ``w_gbm`` plus the forest's exact
  path decomposition (Saabas, precomputed per leaf) scaled by ``w_rf``; with ``w0`` and both biases in ``bias``
  they sum to ``z``.
* Confidence from the ensemble's own uncertainty: ``1 - 2 * sd`` of the forest's trees' probabilities,
  clipped to [0, 1] (trees that disagree mean the model does not know).
* Missing values (None/NaN) take the training set's median of that feature (0 where training never saw one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

FEATURES: tuple[str, ...] = (
    "current_price",
    "total_volume",
    "participant_count",
    "trade_count",
    "days_remaining",
    "price_volatility",
    "volume_trend",
    "social_sentiment",
    "news_sentiment",
    "historical_accuracy",
    "category_risk",
    "liquidity_score",
    "momentum_indicator",
)
CLIP = (0.01, 0.99)


@dataclass(frozen=True)
class TrainParams:
    rf_trees: int = 120
    rf_min_leaf: int = 20
    rf_max_depth: int | None = 10
    gbm_rounds: int = 200
    gbm_leaves: int = 15
    gbm_max_depth: int = 5  # shallow trees keep tree SHAP (per prediction) cheap: its cost grows with depth squared
    gbm_learning_rate: float = 0.05
    gbm_min_data_in_leaf: int = 40
    seed: int = 0


@dataclass
class Batch:
    """A batch's predictions: calibrated probability, uncalibrated log-odds, confidence, contributions."""

    probability: np.ndarray
    log_odds: np.ndarray
    confidence: np.ndarray
    member_spread: np.ndarray
    contributions: np.ndarray | None = None  # rows x features, log-odds
    bias: np.ndarray | None = None


@dataclass
class Ensemble:
    features: tuple[str, ...]
    medians: np.ndarray
    forest: RandomForestClassifier
    booster_model: str  # LightGBM's text model, so the artifact does not pickle C++ state
    weights: tuple[float, float, float]  # w0, w_rf, w_gbm
    calibrator: IsotonicRegression
    _booster: lgb.Booster | None = field(default=None, repr=False)
    _forest_tables: _ForestTables | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Derived caches are rebuilt after loading, not stored in the artifact."""
        return self.__dict__ | {"_booster": None, "_forest_tables": None}

    @property
    def booster(self) -> lgb.Booster:
        if self._booster is None:
            self._booster = lgb.Booster(model_str=self.booster_model)
        return self._booster

    def matrix(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Feature dicts (None = missing) to an imputed float matrix in this model's feature order."""
        x = np.array([[_num(r.get(f)) for f in self.features] for r in rows], dtype=np.float64).reshape(
            len(rows), len(self.features)
        )
        return impute(x, self.medians)

    def predict(self, x: np.ndarray, *, explain: bool = False) -> Batch:
        w0, w_rf, w_gbm = self.weights
        if x.shape[0] == 0:
            empty = np.zeros(0)
            return Batch(empty, empty, empty, empty, np.zeros((0, len(self.features))), empty)
        tables = self._tables()
        leaves = self.forest.apply(x) + tables.offsets  # (rows, trees): each tree's leaf, as a flat node index
        trees = tables.prob[leaves]
        p_rf = trees.mean(axis=1)
        f_gbm = self.booster.predict(x, raw_score=True, num_threads=1)
        z = w0 + w_rf * p_rf + w_gbm * f_gbm
        p = np.clip(self.calibrator.predict(_sigmoid(z)), *CLIP)
        spread = trees.std(axis=1)
        batch = Batch(p, z, np.clip(1.0 - 2.0 * spread, 0.0, 1.0), spread)
        if explain:
            gbm = self.booster.predict(x, pred_contrib=True, num_threads=1)  # features..., bias
            rf = tables.contrib[leaves].mean(axis=1)  # exact path decomposition (Saabas) of the forest
            batch.contributions = w_gbm * gbm[:, :-1] + w_rf * rf
            batch.bias = w0 + w_gbm * gbm[:, -1] + w_rf * tables.root
        return batch

    def _tables(self) -> _ForestTables:
        if self._forest_tables is None:
            self._forest_tables = _forest_tables(self.forest, len(self.features))
        return self._forest_tables


@dataclass(frozen=True)
class _ForestTables:
    """Per node of every tree (flattened): P(YES), and the path decomposition from the root to that node."""

    offsets: np.ndarray  # first flat index of each tree
    prob: np.ndarray  # (nodes,)
    contrib: np.ndarray  # (nodes, features): sum over the path of value(child) - value(parent), by split feature
    root: float  # mean root probability over the trees


def _forest_tables(forest: RandomForestClassifier, n_features: int) -> _ForestTables:
    offsets, probs, contribs, roots = [], [], [], []
    offset = 0
    for est in forest.estimators_:
        t = est.tree_
        value = t.value[:, 0, :]
        prob = value[:, 1] / value.sum(axis=1)
        contrib = np.zeros((t.node_count, n_features))
        stack = [0]
        while stack:  # parents before children
            parent = stack.pop()
            for child in (t.children_left[parent], t.children_right[parent]):
                if child >= 0:
                    contrib[child] = contrib[parent]
                    contrib[child, t.feature[parent]] += prob[child] - prob[parent]
                    stack.append(child)
        offsets.append(offset)
        probs.append(prob)
        contribs.append(contrib)
        roots.append(prob[0])
        offset += t.node_count
    return _ForestTables(np.array(offsets), np.concatenate(probs), np.concatenate(contribs), float(np.mean(roots)))


def _num(v: Any) -> float:
    if v is None:
        return np.nan
    try:
        f = float(v)
    except (TypeError, ValueError):
        return np.nan
    return f if np.isfinite(f) else np.nan


def impute(x: np.ndarray, medians: np.ndarray) -> np.ndarray:
    x = x.copy()
    missing = np.isnan(x)
    if missing.any():
        x[missing] = np.broadcast_to(medians, x.shape)[missing]
    return x


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_ensemble(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    params: TrainParams | None = None,
    features: tuple[str, ...] = FEATURES,
) -> Ensemble:
    """Members on the training fold; stacking weights and calibration on the validation fold."""
    params = params or TrainParams()
    medians = np.nanmedian(np.where(np.isnan(x_train).all(axis=0), 0.0, x_train), axis=0)
    medians = np.where(np.isnan(medians), 0.0, medians)
    xt, xv = impute(x_train, medians), impute(x_val, medians)
    forest = RandomForestClassifier(
        n_estimators=params.rf_trees,
        min_samples_leaf=params.rf_min_leaf,
        max_depth=params.rf_max_depth,
        n_jobs=1,
        random_state=params.seed,
    ).fit(xt, y_train)
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": params.gbm_leaves,
            "max_depth": params.gbm_max_depth,
            "learning_rate": params.gbm_learning_rate,
            "min_data_in_leaf": params.gbm_min_data_in_leaf,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": params.seed,
            "num_threads": 1,
            "verbose": -1,
        },
        lgb.Dataset(xt, label=y_train, feature_name=list(features)),
        num_boost_round=params.gbm_rounds,
    )
    p_rf = forest.predict_proba(xv)[:, 1]
    f_gbm = booster.predict(xv, raw_score=True)
    stack = LogisticRegression(C=10.0).fit(np.column_stack([p_rf, f_gbm]), y_val)
    weights = (float(stack.intercept_[0]), float(stack.coef_[0][0]), float(stack.coef_[0][1]))
    z = weights[0] + weights[1] * p_rf + weights[2] * f_gbm
    calibrator = IsotonicRegression(y_min=CLIP[0], y_max=CLIP[1], out_of_bounds="clip").fit(_sigmoid(z), y_val)
    return Ensemble(
        features=features,
        medians=medians,
        forest=forest,
        booster_model=booster.model_to_string(),
        weights=weights,
        calibrator=calibrator,
    )
