"""Training end to end on small simulated history (seconds): point-in-time rows, promotion refused without
edge, contributions summing to the ensemble's log-odds, confidence that means something, corrupt artifacts
refused while the previous model keeps serving."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from om_cli.history.format import MarketRecord, ResolutionRecord, TradeRecord
from om_cli.history.offline_features import snapshot_rows
from om_cli.history.simulated import HistoryConfig, simulate_history
from om_cli.simulator.world import WorldConfig
from om_contracts import MarketFeatures
from om_prediction.model import TrainParams
from om_prediction.registry import PromotionRule, Registry, RegistryError
from om_prediction.scoring import score_batch
from om_prediction.serving import ModelHolder
from om_prediction.training import dataset as ds
from om_prediction.training.pipeline import train

SMALL = TrainParams(rf_trees=30, gbm_rounds=60)
FAST = HistoryConfig(trades_per_market=60)


@pytest.fixture(scope="module")
def no_edge(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, dict]:
    records = list(simulate_history(250, seed=11, history=FAST, world=WorldConfig.without_edge()))
    registry = Registry(tmp_path_factory.mktemp("models"))
    entry = train(list(snapshot_rows(records)), registry, SMALL, progress=False)
    return registry, entry


def test_without_any_edge_promotion_is_refused_with_numbers(no_edge: tuple[Registry, dict]) -> None:
    registry, entry = no_edge
    with pytest.raises(RegistryError, match=r"upper bound [+-]0\.\d+"):
        registry.promote(entry["version"])
    assert registry.production() is None
    assert Path(entry["report"]).read_text().count("| all held-out |") == 1
    assert (Path(entry["report"]).parent / "reliability.png").stat().st_size > 1000


def test_contributions_sum_to_the_ensembles_log_odds(no_edge: tuple[Registry, dict]) -> None:
    registry, entry = no_edge
    from om_prediction.registry import load

    model = load(registry.root, entry)
    rng = np.random.default_rng(0)
    x = model.medians + rng.normal(0, 1, size=(50, len(model.features))) * np.maximum(np.abs(model.medians), 0.1)
    x[:, 0] = rng.uniform(0.02, 0.98, size=50)
    out = model.predict(x, explain=True)
    assert out.contributions is not None and out.bias is not None
    np.testing.assert_allclose(out.contributions.sum(axis=1) + out.bias, out.log_odds, atol=1e-6)
    # the one-pass leaf tables give what the members themselves say, with or without contributions
    w0, w_rf, w_gbm = model.weights
    p_rf = model.forest.predict_proba(x)[:, 1]
    trees = np.array([t.predict_proba(x.astype(np.float32))[:, 1] for t in model.forest.estimators_])
    np.testing.assert_allclose(
        out.log_odds, w0 + w_rf * p_rf + w_gbm * model.booster.predict(x, raw_score=True), atol=1e-9
    )
    np.testing.assert_allclose(out.member_spread, trees.std(axis=0), atol=1e-9)
    plain = model.predict(x)
    np.testing.assert_array_equal(plain.probability, out.probability)
    one = model.predict(x[3:4], explain=True)
    assert one.contributions is not None
    np.testing.assert_allclose(one.contributions[0], out.contributions[3], atol=1e-12)
    # the booster's tree SHAP, on demand, sums to the same log-odds
    shap, bias = model.explain_shap(x)
    np.testing.assert_allclose(shap.sum(axis=1) + bias, out.log_odds, atol=1e-6)


def test_confident_fifth_beats_the_least_confident_fifth(no_edge: tuple[Registry, dict]) -> None:
    _, entry = no_edge
    check = entry["confidence_check"]
    assert check["most_confident_fifth_brier"] < check["least_confident_fifth_brier"]


def test_missing_feature_values_still_get_a_prediction(no_edge: tuple[Registry, dict]) -> None:
    registry, entry = no_edge
    from om_prediction.registry import load

    model = load(registry.root, entry)
    bare = MarketFeatures(current_price=0.3, total_volume=0, participant_count=0, trade_count=0)
    (score,) = score_batch(model, entry["version"], [bare])
    assert 0 < score.probability < 1 and "missing_features" in score.risk_reasons
    assert score.risk_level == "high"


def test_corrupt_artifact_is_refused_and_the_previous_model_keeps_serving(
    no_edge: tuple[Registry, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry, entry = no_edge
    registry.promote(entry["version"], PromotionRule(max_upper_vs_market=1.0))  # forced past the rule for the test
    holder = ModelHolder(registry.root)
    assert holder.refresh() and holder.version == entry["version"]
    second = registry.add(registry.new_version(), holder.model, {"metrics": entry["metrics"]})  # no retraining
    registry.promote(second["version"], PromotionRule(max_upper_vs_market=1.0, max_worse_than_production=1.0))
    artifact = registry.root / second["artifact"]
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"corrupted!")
    with caplog.at_level(logging.ERROR):
        assert not holder.refresh()
    assert holder.version == entry["version"] and holder.model is not None
    assert "checksum mismatch" in caplog.text and second["version"] in caplog.text


def test_rows_are_point_in_time_a_later_trade_never_leaks() -> None:
    records = list(simulate_history(20, seed=3, history=FAST))
    m = next(r for r in records if isinstance(r, MarketRecord))
    res = next(r for r in records if isinstance(r, ResolutionRecord) and r.market_id == m.market_id)
    # a wild trade a moment before close: no row taken earlier may see it
    late = TradeRecord(
        "late", m.market_id, "u-late", "YES", "BUY", 9999.0, 1.0, 0.5, 0.999, m.close_at - timedelta(seconds=1)
    )
    rows = [r for r in snapshot_rows([*records, late]) if r["market_id"] == m.market_id]
    assert rows and all(row["as_of"] < late.executed_at for row in rows)
    for row in rows:
        assert row["features"]["total_volume"] < 9999.0 and row["features"]["current_price"] != 0.999
        assert row["as_of"] < res.closed_at
    with pytest.raises(ds.LeakError):
        ds.build([{**rows[0], "as_of": res.resolved_at}])


def test_split_keeps_each_market_on_one_side() -> None:
    records = list(simulate_history(60, seed=4, history=FAST))
    data = ds.build(snapshot_rows(records))
    folds = ds.time_split(data)
    sides = [set(f.market_ids.tolist()) for f in folds]
    assert not (sides[0] & sides[1] or sides[1] & sides[2] or sides[0] & sides[2])
    assert max(folds[0].resolved_at) <= min(folds[2].resolved_at)


def test_history_config_is_replaceable() -> None:
    assert replace(FAST, concurrent_markets=5).concurrent_markets == 5


def test_score_batch_gives_each_row_what_the_per_row_rules_give(no_edge: tuple[Registry, dict]) -> None:
    """score_batch computes risk and the top 5 for the whole batch in numpy: row by row, its reasons, level and
    contributions are those of `risk_reasons`, `risk_level_of` and the 5 largest |contribution| in order."""
    from om_prediction.model import impute
    from om_prediction.registry import load
    from om_prediction.scoring import feature_matrix, risk_level_of, risk_reasons

    registry, entry = no_edge
    model = load(registry.root, entry)
    rng = np.random.default_rng(3)
    batch = []
    for _ in range(400):  # thresholds hit exactly too (3 traders, volume 100, price 0.4 / 0.6), and gaps
        extra = {f: None if rng.random() < 0.3 else float(rng.random()) for f in ("price_volatility", "news_sentiment")}
        batch.append(
            MarketFeatures(
                current_price=float(rng.choice([0.4, 0.6, rng.random()])),
                total_volume=float(rng.choice([99.0, 100.0, 5000 * rng.random()])),
                participant_count=int(rng.choice([2, 3, 50])),
                trade_count=int(rng.integers(0, 100)),
                days_remaining=None if rng.random() < 0.5 else float(rng.random() * 7),
                **extra,
            )
        )
    scores = score_batch(model, "v", batch)
    x = feature_matrix(model.features, batch)
    contributions = model.predict(impute(x, model.medians), explain=True).contributions
    assert contributions is not None
    for f, s, row, raw in zip(batch, scores, contributions, x, strict=True):
        reasons = risk_reasons(s.probability, s.confidence, f, baseline=False, imputed=int(np.isnan(raw).sum()))
        assert s.risk_reasons == reasons and s.risk_level == risk_level_of(reasons)
        best = sorted(range(len(row)), key=lambda j: -abs(row[j]))[:5]
        assert [c.feature for c in s.contributions] == [model.features[j] for j in best]
        assert [c.contribution for c in s.contributions] == [row[j] for j in best]
        assert [c.value for c in s.contributions] == [None if np.isnan(raw[j]) else raw[j] for j in best]
    assert {s.risk_level for s in scores} == {"low", "medium", "high"} or len({s.risk_reasons for s in scores}) > 5


def test_export_rows_are_sampled_per_market_over_its_life_and_offline_rows_kept() -> None:
    """A market with many snapshots (feature's export) gives at most ROWS_PER_MARKET, each an input row, spread over
    its life and the same every time; a market with few (the offline sampler's 8) keeps them all."""
    from datetime import UTC, datetime

    start = datetime(2025, 1, 1, tzinfo=UTC)

    def row(market: str, minutes: int, life_days: int = 4) -> dict:
        return {
            "market_id": market,
            "as_of": (start + timedelta(minutes=minutes)).isoformat(),
            "created_at": start.isoformat(),
            "close_at": (start + timedelta(days=life_days)).isoformat(),
            "resolved_at": (start + timedelta(days=life_days)).isoformat(),
            "resolution": "YES",
            "features": {"current_price": minutes / 10_000, "days_remaining": 1.0},
        }

    busy = [row("busy", m) for m in range(0, 4 * 1440 - 1, 15)]  # a snapshot every 15 min: 384
    quiet = [row("quiet", m) for m in (100, 900, 2000, 3000, 4000, 4500, 5000, 5500)]
    data = ds.build(busy + quiet)
    picked = data.market_price[data.market_ids == "busy"]
    assert 20 <= len(picked) <= ds.ROWS_PER_MARKET and len(set(picked)) == len(picked)
    assert set(picked) <= {r["features"]["current_price"] for r in busy}
    assert picked.min() < 0.1 and picked.max() > 0.45  # from early and late in the market's 4 days (0 .. 0.576)
    assert sorted(data.market_price[data.market_ids == "quiet"]) == [r["features"]["current_price"] for r in quiet]
    assert np.array_equal(ds.build(busy + quiet).market_price, data.market_price)  # seeded
    assert len(ds.build(busy, per_market=None)) == len(busy)


def _serving_pair(no_edge: tuple[Registry, dict], root: Path) -> tuple[Registry, ModelHolder, dict, dict]:
    """A registry of its own with the trained model twice: `first` in production and served, `second` promoted
    after it (so its artifact passed `load` once), for a test to damage."""
    from om_prediction.registry import load

    registry, entry = no_edge
    model = load(registry.root, entry)
    ours = Registry(root)
    anything = PromotionRule(max_upper_vs_market=1.0, max_worse_than_production=1.0)  # this is about loading
    first = ours.add(ours.new_version(), model, {"metrics": entry["metrics"]})
    ours.promote(first["version"], anything)
    holder = ModelHolder(ours.root)
    assert holder.refresh() and holder.version == first["version"]
    second = ours.add(ours.new_version(), model, {"metrics": entry["metrics"]})
    ours.promote(second["version"], anything)
    return ours, holder, first, second


def _replace_artifact(registry: Registry, entry: dict, content: bytes) -> None:
    """Another artifact with a matching checksum in the registry: what a registry written elsewhere holds."""
    import json

    from om_prediction.registry import sha256

    path = registry.root / entry["artifact"]
    path.write_bytes(content)
    data = json.loads(registry.index.read_text())
    data["versions"][entry["version"]]["checksum"] = sha256(path)
    registry.index.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("lightgbm", "built with lightgbm 3.3.5"),
        ("scikit-learn", "built with scikit-learn 0.24.2"),
        ("feature", "needs features this service does not have: ['crystal_ball']"),
        ("not a pickle", "artifact does not load"),
        ("no ensemble", "artifact holds no ensemble"),
    ],
)
def test_incompatible_artifact_is_refused_at_load_and_the_previous_model_keeps_serving(
    no_edge: tuple[Registry, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, why: str
) -> None:
    """Bad input: an artifact whose checksum matches but which was built with other library versions, needs a
    feature the service does not have, does not unpickle or holds something else is refused with one ERROR line
    naming the version and the reason; the model served before goes on serving (and scoring)."""
    import copy
    import pickle

    from om_prediction.registry import library_versions

    registry, holder, first, second = _serving_pair(no_edge, tmp_path / "models")
    model = holder.model
    assert model is not None
    blob: object = {"format": 1, "libraries": library_versions(), "ensemble": model}
    if damage in ("lightgbm", "scikit-learn"):
        blob = {**blob, "libraries": {**library_versions(), damage: "3.3.5" if damage == "lightgbm" else "0.24.2"}}
    elif damage == "feature":
        odd = copy.copy(model)
        odd.features = (*model.features[:-1], "crystal_ball")
        blob = {**blob, "ensemble": odd}
    elif damage == "no ensemble":
        blob = {**blob, "ensemble": {"weights": [0, 1, 1]}}
    _replace_artifact(registry, second, b"not a pickle" if damage == "not a pickle" else pickle.dumps(blob))
    with caplog.at_level(logging.ERROR, logger="om_prediction.serving"):
        assert not holder.refresh()
    assert holder.version == first["version"] and holder.model is model
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage().startswith(f"refusing model {second['version']}: ")
    assert why in line.getMessage() and f"still serving {first['version']}" in line.getMessage()
    caplog.clear()
    assert not holder.refresh() and not caplog.records  # refused once, not retried every poll
    bare = MarketFeatures(current_price=0.3, total_volume=50, participant_count=4, trade_count=6)
    (score,) = score_batch(*holder.current, [bare])
    assert score.model_version == first["version"]


def test_missing_values_take_the_training_median(no_edge: tuple[Registry, dict]) -> None:
    """The documented imputation: a missing (None), NaN or infinite feature is scored as the training median of
    that feature, so a gap gives exactly the prediction of the same vector with the median filled in."""
    from om_prediction.registry import load
    from om_prediction.scoring import feature_matrix

    registry, entry = no_edge
    model = load(registry.root, entry)
    medians = dict(zip(model.features, model.medians.tolist(), strict=True))
    known = {"current_price": 0.35, "total_volume": 800.0, "participant_count": 9, "trade_count": 40}
    gaps = MarketFeatures(**known, volume_trend=float("nan"), momentum_indicator=float("inf"))  # the rest: None
    filled = MarketFeatures(
        **known,
        **{f: medians[f] for f in model.features if f not in known and f not in ("participant_count", "trade_count")},
    )
    assert np.isnan(feature_matrix(model.features, [gaps])).sum() == len(model.features) - len(known)
    (with_gaps,), (with_medians,) = score_batch(model, "v", [gaps]), score_batch(model, "v", [filled])
    assert with_gaps.probability == with_medians.probability
    assert with_gaps.confidence == with_medians.confidence
    assert "missing_features" in with_gaps.risk_reasons and "missing_features" not in with_medians.risk_reasons
    assert all(c.value is None for c in with_gaps.contributions if c.feature not in known)


def _entry(version: str, brier: float, high: float, state: str = "candidate") -> dict:
    return {
        "version": version,
        "state": state,
        "metrics": {"brier": brier, "market_brier": 0.1, "brier_diff": high - 0.01, "brier_diff_high": high},
    }


def test_promotion_rule_says_why_in_numbers_and_is_configurable() -> None:
    rule = PromotionRule()
    assert rule.refusal(_entry("c", 0.09, -0.001), None) is None
    assert "upper bound +0.00100, not below +0.00000" in (rule.refusal(_entry("c", 0.09, 0.001), None) or "")
    production = _entry("p", 0.0900, -0.01, "production")
    assert rule.refusal(_entry("c", 0.0909, -0.001), production) is None  # 0.0009 worse: within 0.001
    refusal = rule.refusal(_entry("c", 0.0925, -0.001), production)
    assert refusal is not None and "0.00250 worse than production p (0.09000)" in refusal
    assert PromotionRule(max_worse_than_production=0.005).refusal(_entry("c", 0.0925, -0.001), production) is None
    assert PromotionRule(max_upper_vs_market=0.01).refusal(_entry("c", 0.09, 0.001), None) is None


def test_models_cli_promote_refusal_show_list_and_rollback(
    no_edge: tuple[Registry, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`om models` (prediction's CLI): a refused promotion exits 1 with the numbers and changes nothing; rollback
    puts the previous version back in production and archives the current one."""
    from om_prediction.cli import main as prediction_main

    registry, holder, first, second = _serving_pair(no_edge, tmp_path / "models")
    assert holder.refresh() and holder.version == second["version"]
    third = registry.add(
        registry.new_version(), holder.model, {"metrics": {**first["metrics"], "brier_diff_high": 0.02}}
    )
    root = str(registry.root)
    assert prediction_main(["models", "--models-dir", root, "promote", third["version"]]) == 1
    assert "upper bound +0.02000, not below +0.00000" in capsys.readouterr().out
    assert registry.get(third["version"])["state"] == "candidate"
    assert prediction_main(["models", "--models-dir", root, "list"]) == 0
    listed = capsys.readouterr().out
    for entry, state in ((first, "archived"), (second, "production"), (third, "candidate")):
        assert f"{entry['version']:<24} {state}" in listed
    back = registry.rollback()
    assert back["version"] == first["version"] and registry.production()["version"] == first["version"]
    assert registry.get(second["version"])["state"] == "archived"
    assert holder.refresh() and holder.version == first["version"]  # served again after the rollback
    assert prediction_main(["models", "--models-dir", root, "show", first["version"]]) == 0
    shown = capsys.readouterr().out
    assert '"state": "production"' in shown and first["checksum"] in shown


def test_report_and_manifest_hold_what_the_registry_promises(no_edge: tuple[Registry, dict]) -> None:
    """Item 4 and 5: the markdown report beside the model has the overall row and the slices by time to close and
    by volume, the confidence check and both PNGs; the manifest has the metrics, data range, features, library
    versions, sha256 and the candidate state."""
    from om_prediction.model import FEATURES
    from om_prediction.registry import sha256

    registry, entry = no_edge
    folder = Path(entry["report"]).parent
    report = Path(entry["report"]).read_text()
    for text in ("| all held-out |", "| time to close: < 1 day |", "| liquidity: volume < ", "Confidence check"):
        assert text in report, text
    assert report.count("| time to close: ") >= 2 and report.count("| liquidity: ") == 3
    assert (folder / "importance.png").stat().st_size > 1000 and (folder / "reliability.png").stat().st_size > 1000
    stored = registry.get(entry["version"])
    assert stored["checksum"] == sha256(registry.root / stored["artifact"])
    assert stored["features"] == list(FEATURES) and set(stored["libraries"]) >= {"lightgbm", "scikit-learn"}
    assert stored["data"]["first_as_of"] < stored["data"]["last_resolved_at"]
    assert stored["data"]["test_markets"] > 0 and stored["state"] in ("candidate", "production", "archived")
    m = stored["metrics"]
    assert {"brier", "log_loss", "ece", "auc", "market_brier", "brier_diff_low", "brier_diff_high"} <= m.keys()
    assert {b["group"] for b in stored["buckets"]} == {"time to close", "liquidity"}


def test_om_train_from_a_history_folder_prints_the_verdict_and_where_the_report_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from om_cli.__main__ import main
    from om_cli.history.format import write_history

    write_history(tmp_path / "h", simulate_history(150, seed=12, history=FAST))
    assert main(["train", "--history", str(tmp_path / "h"), "--models-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"candidate m\S+: Brier 0\.\d{4} vs market 0\.\d{4}, diff [+-]0\.\d{4} \[95% ", out), out
    assert "promotable" in out  # or "not promotable: <the numbers>"
    report = Path(re.findall(r"report: (\S+)", out)[-1])
    assert report.is_file() and report.parent.parent == tmp_path / "models"
