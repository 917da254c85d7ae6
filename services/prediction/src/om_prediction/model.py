"""The trained model: a Random Forest and a LightGBM booster stacked in log-odds, then calibrated.

Pure computation on numpy arrays (no I/O): `fit_ensemble` learns it, `Ensemble.predict` scores a batch.

* Stacking: the uncalibrated ensemble's log-odds are ``z = w0 + w_rf * p_rf + w_gbm * f_gbm`` (``p_rf`` the
  forest's probability, ``f_gbm`` the booster's raw log-odds), with weights learnt by logistic regression on a
  validation fold the members never saw.
* Calibration: isotonic regression of ``sigmoid(z)`` on the same fold, clipped to [0.01, 0.99].
* Contributions: the exact path decomposition (Saabas) of both members, precomputed per leaf: for each leaf, the
  change of the node value along its path, credited to the feature split on at each step (the forest's node
  values are P(YES), the booster's are LightGBM's node outputs). Scaled by ``w_rf`` and ``w_gbm``; with ``w0``
  and both members' root values in ``bias`` they sum to ``z`` (telescoping: exact up to float rounding).
  The booster's tree SHAP (``pred_contrib``) is 35 times slower and stays available on demand (`explain_shap`).
* Confidence from the ensemble's own uncertainty: ``1 - 2 * sd`` of the forest's trees' probabilities,
  clipped to [0, 1] (trees that disagree mean the model does not know).
* Missing values (None/NaN) take the training set's median of that feature (0 where training never saw one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.sparse import csr_matrix
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
    gbm_max_depth: int = 5
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
    _tables: _LeafTables | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Derived caches are rebuilt after loading, not stored in the artifact."""
        return self.__dict__ | {"_booster": None, "_tables": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Artifacts written before the leaf tables existed carry `_forest_tables`; drop it."""
        state.pop("_forest_tables", None)
        self.__dict__.update(state | {"_booster": None, "_tables": None})

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
        """Score a batch: one leaf lookup per tree of both members, then one sparse product gives everything.

        Each row's leaves (forest and booster) form a row of a sparse 0/1 matrix ``S`` (rows x all leaves);
        ``S @ table`` sums, per row, a per-leaf table pre-scaled by the stacking weights, whose columns are the
        contributions (path decomposition) of both members, the forest's mean P(YES) and mean P(YES)^2 (for the
        members' spread) and the booster's raw score. So ``p_rf``, ``f_gbm``, ``z`` and the contributions come
        from a single pass, and the contributions sum to ``z - bias`` by construction.
        """
        w0, w_rf, w_gbm = self.weights
        n, k = x.shape[0], len(self.features)
        if n == 0:
            empty = np.zeros(0)
            return Batch(empty, empty, empty, empty, np.zeros((0, k)), empty)
        t = self._leaf_tables()
        sums = self._leaf_matrix(x, t) @ (t.table if explain else t.summary)
        p_rf, p_rf_sq, f_gbm = sums[:, -3], sums[:, -2], sums[:, -1]
        z = w0 + w_rf * p_rf + w_gbm * f_gbm
        p = np.clip(self.calibrator.predict(_sigmoid(z)), *CLIP)
        spread = np.sqrt(np.maximum(p_rf_sq - p_rf * p_rf, 0.0))  # population sd of the forest's trees
        batch = Batch(p, z, np.clip(1.0 - 2.0 * spread, 0.0, 1.0), spread)
        if explain:
            batch.contributions = np.ascontiguousarray(sums[:, :k])
            batch.bias = np.full(n, t.bias)
        return batch

    def explain_shap(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On-demand explanation with the booster's exact tree SHAP (LightGBM ``pred_contrib``, about 35 times
        slower than `predict`'s path decomposition) plus the forest's path decomposition, both scaled by the
        stacking weights: (contributions rows x features, bias per row), summing to the same ``z``."""
        w0, w_rf, w_gbm = self.weights
        t = self._leaf_tables()
        k = len(self.features)
        gbm = np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1))  # features..., bias
        rf_part = self._leaf_matrix(x, t, booster=False) @ t.table[: t.rf_columns, :k]
        return w_gbm * gbm[:, :-1] + rf_part, w0 + w_gbm * gbm[:, -1] + w_rf * t.rf_root

    def _leaf_matrix(self, x: np.ndarray, t: _LeafTables, *, booster: bool = True) -> csr_matrix:
        """Rows x (every forest node, then every booster leaf): 1 where the row lands."""
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # what scikit-learn's trees compare against
        forest = self.forest.estimators_
        n_trees = len(forest) + (self.booster.num_trees() if booster else 0)
        leaves = np.empty((n_trees, x.shape[0]), dtype=np.int64)  # tree-major: each tree fills one row
        for i, est in enumerate(forest):  # the trees directly: no joblib dispatch per tree as forest.apply has
            leaves[i] = est.tree_.apply(x32)
        if booster:
            leaves[len(forest) :] = np.asarray(self.booster.predict(x, pred_leaf=True, num_threads=1)).T
        leaves += t.offsets[:n_trees, None]
        indptr = np.arange(0, leaves.size + 1, n_trees, dtype=np.int64)
        width = t.table.shape[0] if booster else t.rf_columns
        return csr_matrix((np.ones(leaves.size), leaves.T.ravel(), indptr), shape=(x.shape[0], width))

    def prepare(self) -> Ensemble:
        """Build the derived leaf tables now (at load, off the scoring path) rather than on the first batch."""
        self._leaf_tables()
        return self

    def _leaf_tables(self) -> _LeafTables:
        if self._tables is None:
            self._tables = _leaf_tables(self)
        return self._tables


@dataclass(frozen=True)
class _LeafTables:
    """Per leaf of every tree (forest nodes first, then booster leaves), pre-scaled by the stacking weights.

    ``table`` columns: the features' contributions, then the forest's P(YES)/T and P(YES)^2/T, then the booster's
    leaf value; ``summary`` is the last three columns alone (scoring without contributions).
    """

    offsets: np.ndarray  # first column of each tree (forest trees, then booster trees)
    table: np.ndarray  # (columns, features + 3)
    summary: np.ndarray  # (columns, 3)
    rf_columns: int
    rf_root: float  # mean root P(YES) over the forest's trees
    bias: float  # w0 + w_rf * rf_root + w_gbm * the booster's summed root values


def _leaf_tables(model: Ensemble) -> _LeafTables:
    w0, w_rf, w_gbm = model.weights
    k = len(model.features)
    rf_off, rf_rows, rf_roots = _forest_nodes(model.forest, k)
    gbm_off, gbm_rows, gbm_root = _booster_leaves(model.booster.dump_model(), k)
    n_rf = len(model.forest.estimators_)
    rf = np.concatenate(rf_rows)
    rf[:, :k] *= w_rf / n_rf
    rf[:, k : k + 2] /= n_rf
    gbm = np.concatenate(gbm_rows)
    gbm[:, :k] *= w_gbm
    table = np.ascontiguousarray(np.vstack([rf, gbm]))
    rf_root = float(np.mean(rf_roots))
    return _LeafTables(
        offsets=np.concatenate([rf_off, gbm_off + len(rf)]),
        table=table,
        summary=np.ascontiguousarray(table[:, k:]),
        rf_columns=len(rf),
        rf_root=rf_root,
        bias=w0 + w_rf * rf_root + w_gbm * gbm_root,
    )


def _forest_nodes(forest: RandomForestClassifier, k: int) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Per node of every tree: the path decomposition (Saabas) from the root, P(YES), P(YES)^2, 0."""
    offsets, rows, roots = [], [], []
    offset = 0
    for est in forest.estimators_:
        t = est.tree_
        value = t.value[:, 0, :]
        prob = value[:, 1] / value.sum(axis=1)
        row = np.zeros((t.node_count, k + 3))
        stack = [0]
        while stack:  # parents before children
            parent = stack.pop()
            for child in (t.children_left[parent], t.children_right[parent]):
                if child >= 0:
                    row[child, :k] = row[parent, :k]
                    row[child, t.feature[parent]] += prob[child] - prob[parent]
                    stack.append(child)
        row[:, k], row[:, k + 1] = prob, prob * prob
        offsets.append(offset)
        rows.append(row)
        roots.append(float(prob[0]))
        offset += t.node_count
    return np.array(offsets), rows, roots


def _booster_leaves(dump: dict[str, Any], k: int) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Per leaf of every booster tree (LightGBM's leaf index): the path decomposition from the root over
    LightGBM's node values (``internal_value``, the trained tree's mean output below a node), 0, 0, leaf value.

    A leaf's contributions telescope to ``leaf_value - root_value``, so they sum exactly to the tree's output
    minus its root value, whatever rounding the dumped internal values carry."""
    offsets, rows = [], []
    root_sum, offset = 0.0, 0
    for info in dump["tree_info"]:
        root = info["tree_structure"]
        row = np.zeros((info["num_leaves"], k + 3))
        root_value = float(root["leaf_value"] if "leaf_index" in root else root["internal_value"])
        stack: list[tuple[dict[str, Any], np.ndarray, float]] = [(root, np.zeros(k), root_value)]
        while stack:
            node, path, value = stack.pop()
            if "leaf_index" in node:
                row[node["leaf_index"], :k] = path
                row[node["leaf_index"], k + 2] = node["leaf_value"]
                continue
            for child in (node["left_child"], node["right_child"]):
                child_value = float(child["leaf_value"] if "leaf_index" in child else child["internal_value"])
                step = path.copy()
                step[node["split_feature"]] += child_value - value
                stack.append((child, step, child_value))
        offsets.append(offset)
        rows.append(row)
        root_sum += root_value
        offset += info["num_leaves"]
    return np.array(offsets), rows, root_sum


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
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


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
    f_gbm = np.asarray(booster.predict(xv, raw_score=True))
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
