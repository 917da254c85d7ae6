"""A training run: dataset -> time split -> ensemble -> evaluation against the market -> registry candidate,
with a markdown report, a reliability diagram and feature importances next to the model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from om_prediction.model import Ensemble, TrainParams, fit_ensemble
from om_prediction.registry import Registry
from om_prediction.training import dataset as ds
from om_prediction.training.evaluate import Scores, confidence_check, score


class TrainingError(RuntimeError):
    """Too little or unusable data to train on."""


def _buckets(test: ds.Dataset, p: np.ndarray) -> list[tuple[str, str, Scores]]:
    out = []
    days = np.nan_to_num(test.days_remaining, nan=0.0)
    for name, mask in (
        ("< 1 day", days < 1),
        ("1-3 days", (days >= 1) & (days < 3)),
        (">= 3 days", days >= 3),
    ):
        if mask.sum() >= 20:
            out.append(
                ("time to close", name, score(p[mask], test.market_price[mask], test.y[mask], test.market_ids[mask]))
            )
    liq = np.nan_to_num(test.liquidity, nan=0.0)
    lo, hi = np.quantile(liq, [1 / 3, 2 / 3]) if len(liq) else (0, 0)
    for name, mask in (
        (f"volume < {lo:.0f}", liq < lo),
        (f"volume {lo:.0f}-{hi:.0f}", (liq >= lo) & (liq < hi)),
        (f"volume >= {hi:.0f}", liq >= hi),
    ):
        if mask.sum() >= 20:
            out.append(
                ("liquidity", name, score(p[mask], test.market_price[mask], test.y[mask], test.market_ids[mask]))
            )
    return out


def _plots(folder: Path, ensemble: Ensemble, p: np.ndarray, market: np.ndarray, y: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, q in (("model", p), ("market price", market)):
        bins = np.minimum((q * 10).astype(int), 9)
        xs = [q[bins == b].mean() for b in range(10) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(10) if (bins == b).any()]
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability (held-out markets)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "reliability.png", dpi=100)
    plt.close(fig)

    gain = ensemble.booster.feature_importance(importance_type="gain")
    rf = ensemble.forest.feature_importances_
    order = np.argsort(rf + gain / max(gain.sum(), 1e-12))
    fig, ax = plt.subplots(figsize=(7, 5))
    bars = np.arange(len(order))
    ax.barh(bars - 0.2, rf[order], height=0.4, label="random forest (impurity)")
    ax.barh(bars + 0.2, (gain / max(gain.sum(), 1e-12))[order], height=0.4, label="LightGBM (gain share)")
    ax.set_yticks(bars, [ensemble.features[i] for i in order])
    ax.set(title="Feature importance")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "importance.png", dpi=100)
    plt.close(fig)


def _row(label: str, s: Scores) -> str:
    return (
        f"| {label} | {s.rows} | {s.markets} | {s.brier:.4f} | {s.market_brier:.4f} | {s.brier_diff:+.4f} "
        f"[{s.brier_diff_low:+.4f}, {s.brier_diff_high:+.4f}] | {s.log_loss:.4f} | {s.market_log_loss:.4f} | "
        f"{s.ece:.4f} | {s.market_ece:.4f} | {s.auc:.3f} | {s.market_auc:.3f} |"
    )


def _report(
    entry: dict[str, Any], overall: Scores, buckets: list[tuple[str, str, Scores]], confident: tuple[float, float]
) -> str:
    head = (
        "| slice | rows | markets | Brier | market Brier | Brier diff [95% CI] | log loss | market log loss | "
        "ECE | market ECE | AUC | market AUC |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"# Model {entry['version']}",
        "",
        f"Trained on {entry['data']['train_markets']} markets, validated on {entry['data']['validation_markets']}, "
        f"held out {entry['data']['test_markets']} (split by resolution time; no market in two folds). "
        f"Data from {entry['data']['first_as_of']} to {entry['data']['last_resolved_at']}.",
        "",
        "The baseline is the market price at the same timestamps. Brier diff is model - market "
        "(negative: the model is better), with a 95% bootstrap interval over markets.",
        "",
        head,
        _row("all held-out", overall),
        *[_row(f"{group}: {name}", s) for group, name, s in buckets],
        "",
        f"Confidence check (held out): Brier of the most confident fifth {confident[0]:.4f}, "
        f"least confident fifth {confident[1]:.4f}.",
        "",
        f"Stacking weights (intercept, forest probability, booster log-odds): {entry['weights']}",
        "",
        "![reliability](reliability.png)",
        "",
        "![importance](importance.png)",
        "",
    ]
    return "\n".join(lines)


def train(
    rows: Iterable[dict[str, Any]],
    registry: Registry,
    params: TrainParams | None = None,
    *,
    source: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and register a candidate; returns its registry entry (with `report` the report's path)."""
    params = params or TrainParams()
    steps = tqdm(total=5, desc="train", unit="step", disable=not progress)
    steps.set_postfix_str("dataset")
    data = ds.build(rows)
    train_set, val, test = ds.time_split(data)
    for name, fold in (("training", train_set), ("validation", val), ("test", test)):
        if len(fold) < 50 or len(set(fold.y.tolist())) < 2:
            raise TrainingError(f"the {name} fold has {len(fold)} rows (need >= 50 with both outcomes)")
    steps.update()
    steps.set_postfix_str("fit forest + booster, stack, calibrate")
    ensemble = fit_ensemble(train_set.x, train_set.y, val.x, val.y, params)
    steps.update()
    steps.set_postfix_str("evaluate")
    batch = ensemble.predict(test.x)
    overall = score(batch.probability, test.market_price, test.y, test.market_ids, seed=params.seed)
    buckets = _buckets(test, batch.probability)
    confident = confidence_check(batch.probability, batch.confidence, test.y)
    steps.update()
    steps.set_postfix_str("register")
    version = registry.new_version()
    entry = registry.add(
        version,
        ensemble,
        {
            "metrics": overall.as_dict(),
            "confidence_check": {
                "most_confident_fifth_brier": confident[0],
                "least_confident_fifth_brier": confident[1],
            },
            "buckets": [{"group": g, "slice": n, **s.as_dict()} for g, n, s in buckets],
            "weights": list(ensemble.weights),
            "params": asdict(params),
            "source": source,
            "data": {
                "rows": len(data),
                "train_markets": len(set(train_set.market_ids.tolist())),
                "validation_markets": len(set(val.market_ids.tolist())),
                "test_markets": len(set(test.market_ids.tolist())),
                "first_as_of": data.first_as_of.isoformat() if data.first_as_of else None,
                "last_resolved_at": data.last_resolved.isoformat() if data.last_resolved else None,
            },
        },
    )
    steps.update()
    steps.set_postfix_str("report")
    folder = registry.folder(version)
    _plots(folder, ensemble, batch.probability, test.market_price, test.y)
    (folder / "report.md").write_text(_report(entry, overall, buckets, confident))
    steps.update()
    steps.close()
    return {**entry, "report": str(folder / "report.md")}
