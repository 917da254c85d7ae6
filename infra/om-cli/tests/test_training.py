"""Training end to end on small simulated history (seconds): point-in-time rows, promotion refused without
edge, contributions summing to the ensemble's log-odds, confidence that means something, corrupt artifacts
refused while the previous model keeps serving."""

from __future__ import annotations

import logging
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
