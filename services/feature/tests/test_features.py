"""feature's domain without I/O: every feature computed by hand on a small stream, event-time semantics (late events,
grace, order independence, identical replays), bounded state, coalescing, holds and hostile numbers."""

from __future__ import annotations

import math
import pickle  # nosec B403
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_contracts import (
    FeatureVectorComputed,
    MarketClosed,
    MarketCreated,
    MarketResolved,
    SignalObserved,
    TradeExecuted,
)
from om_contracts.codec import decode
from om_contracts.topics import FEATURE_VECTORS
from om_feature.engine import VECTOR_NAMESPACE, Engine, EngineConfig, vector_id
from om_feature.features import DEFAULT, CategoryHistory, MarketState, compute
from om_feature.processor import encode_vector

T0 = datetime(2025, 3, 1, tzinfo=UTC)  # aligned to every bucket size


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def created(market: str = "m", *, s: float = 0, category: str = "c", close_days: float = 2) -> MarketCreated:
    return MarketCreated(
        occurred_at=at(s),
        producer="t",
        market_id=market,
        question="q?",
        category=category,
        close_at=T0 + timedelta(days=close_days),
        initial_price=0.4,
    )


def trade(
    s: float,
    *,
    market: str = "m",
    user: str = "alice",
    amount: float = 10.0,
    before: float = 0.5,
    after: float = 0.6,
    event_id: uuid.UUID | None = None,
) -> TradeExecuted:
    return TradeExecuted(
        event_id=event_id or uuid.uuid4(),
        occurred_at=at(s),
        producer="t",
        trade_id=f"t{s}",
        market_id=market,
        user_id=user,
        outcome="YES",
        amount=amount,
        shares=amount * 2,
        price_before=before,
        price_after=after,
    )


def signal(s: float, *, kind: str = "news", score: float | None = 0.5, text: str = "x", market: str = "m"):
    return SignalObserved(
        occurred_at=at(s),
        producer="t",
        signal_id=f"s{s}",
        market_id=market,
        kind=kind,
        source="wire",
        text=text,
        sentiment=score,
    )


def run(events: list[Any], engine: Engine | None = None) -> tuple[Engine, Any]:
    """One batch, then the idle flush (the stream goes quiet), as the service does."""
    engine = engine or Engine()
    out = engine.process((e, 0, e) for e in events)
    idle = engine.flush()
    out.vectors += idle.vectors
    out.snapshots += idle.snapshots
    return engine, out


def features_of(engine: Engine, market: str = "m") -> dict[str, Any]:
    s = engine.markets[market]
    return compute(s, engine.config.features, engine.categories.get(s.category), s.watermark)


# --- each feature by hand -------------------------------------------------------------------------------


def test_totals_price_and_days_remaining_by_hand() -> None:
    engine, _ = run(
        [
            created(),
            trade(60, user="alice", amount=10.0, after=0.55),
            trade(120, user="bob", amount=2.5, after=0.60),
            trade(43_200, user="alice", amount=7.5, after=0.58),  # 12 h in
        ]
    )
    f = features_of(engine)
    assert f["total_volume"] == 20.0 and f["trade_count"] == 3 and f["participant_count"] == 2
    assert f["current_price"] == 0.58
    assert f["days_remaining"] == pytest.approx(1.5)  # close at 2 days, as of 12 h


def test_price_before_any_trade_is_the_opening_price() -> None:
    engine, out = run([created()])
    assert features_of(engine)["current_price"] == 0.4
    assert out.vectors[-1].features["price_volatility"] is None


def test_volatility_momentum_liquidity_by_hand() -> None:
    engine, _ = run(
        [
            created(),
            trade(1, amount=10, before=0.50, after=0.60),
            trade(2, amount=20, before=0.60, after=0.55),
            trade(3, amount=30, before=0.55, after=0.65),
        ]
    )
    f = features_of(engine)
    # changes from the first trade's price_before: +0.10, -0.05, +0.10 -> RMS
    assert f["price_volatility"] == pytest.approx(math.sqrt((0.01 + 0.0025 + 0.01) / 3))
    assert f["momentum_indicator"] == pytest.approx(0.15)
    # 60 currency moved the price 0.25 in total = 25 percentage points -> 2.4 per point
    assert f["liquidity_score"] == pytest.approx(2.4)


def test_window_keeps_the_newest_trades_by_event_time() -> None:
    events = [created()] + [trade(i, before=i / 100, after=(i + 1) / 100) for i in range(1, 31)]
    engine, _ = run(events)
    window = engine.markets["m"].window
    assert len(window) == DEFAULT.window_trades == 20
    assert [w[0] for w in window] == [at(i).timestamp() for i in range(11, 31)]
    assert features_of(engine)["momentum_indicator"] == pytest.approx(0.31 - 0.11)


def test_volume_trend_by_hand() -> None:
    # 60 at 0 h, 30 at 3 h. As of 3 h the last hour (12 five-minute buckets, 2:05..3:05) holds 30; the history
    # before it is 2 h 5 min long and holds 60: 28.8 per hour. Trend = (30 - 28.8) / (30 + 28.8).
    engine, _ = run([created(), trade(0, amount=60), trade(3 * 3600, amount=30)])
    assert features_of(engine)["volume_trend"] == pytest.approx((30 - 28.8) / 58.8)


def test_volume_trend_is_unknown_without_history_and_minus_one_when_trading_stopped() -> None:
    engine, _ = run([created(), trade(0, amount=60), trade(600, amount=5)])
    assert features_of(engine)["volume_trend"] is None  # less than an hour of history
    engine, _ = run([created(), trade(0, amount=60), signal(3 * 3600)])
    assert features_of(engine)["volume_trend"] == pytest.approx(-1.0)  # volume before, none in the last hour


def test_sentiment_is_the_mean_of_the_last_24_hours_of_that_kind() -> None:
    engine, _ = run(
        [
            created(),
            signal(0, score=0.9),
            signal(25 * 3600, score=0.5),
            signal(25 * 3600 + 1, score=-0.1),
            signal(25 * 3600 + 2, kind="social", score=None, text="This is great, I love it!"),
        ]
    )
    f = features_of(engine)
    assert f["news_sentiment"] == pytest.approx(0.2)  # the 0.9 from 25 h ago is out of the window
    assert f["social_sentiment"] > 0.5  # scored from the text by VADER


def test_historical_accuracy_and_category_risk_use_resolutions_before_t_only() -> None:
    events = [created("x"), trade(10, market="x", after=0.8), created("y"), trade(10, market="y", after=0.3)]
    events += [
        MarketResolved(occurred_at=at(100), producer="t", market_id="x", resolution="YES", resolution_price=1.0),
        created("z"),
        trade(150, market="z"),
        MarketResolved(occurred_at=at(200), producer="t", market_id="y", resolution="NO", resolution_price=0.0),
        trade(250, market="z", user="bob"),
    ]
    engine, out = run(events)
    z = {v.as_of - T0.timestamp(): v.features for v in out.vectors if v.market_id == "z"}
    assert z[0]["historical_accuracy"] is None  # created at 0 s, before any resolution
    first, last = z[150], z[250]
    # As of 150 s only x counts: Brier (0.8 - 1)^2 = 0.04, surprise 0.2
    assert first["historical_accuracy"] == pytest.approx(0.96) and first["category_risk"] == pytest.approx(0.2)
    # As of 250 s, x and y: Brier (0.04 + 0.09) / 2, surprise (0.2 + 0.3) / 2
    assert last["historical_accuracy"] == pytest.approx(0.935) and last["category_risk"] == pytest.approx(0.25)
    assert engine.categories["c"].as_of(at(100).timestamp()) == (None, None)  # strictly before t
    assert [o.market_id for o in out.outcomes] == ["x", "y"]


def test_category_history_accepts_resolutions_out_of_order() -> None:
    h = CategoryHistory()
    h.add("b", 200.0, 0.3, 0.0)
    h.add("a", 100.0, 0.8, 1.0)
    h.add("a", 100.0, 0.8, 1.0)  # the same market again changes nothing
    assert h.as_of(150.0) == pytest.approx((0.96, 0.2))
    assert h.as_of(300.0) == pytest.approx((0.935, 0.25))


def test_participants_switch_to_hyperloglog_beyond_the_exact_limit() -> None:
    events = [created()] + [trade(i, user=f"user-{i % 3000}") for i in range(6000)]
    engine, _ = run(events)
    s = engine.markets["m"]
    assert s.participants.exact is None and len(s.participants.registers) == 2**DEFAULT.hll_precision
    assert features_of(engine)["participant_count"] == pytest.approx(3000, rel=0.07)  # 3 standard errors
    small, _ = run([created()] + [trade(i, user=f"u{i % 64}") for i in range(200)])
    assert features_of(small)["participant_count"] == 64  # exact up to the limit


# --- event time -----------------------------------------------------------------------------------------


def test_a_late_trade_within_grace_lands_where_it_belongs_and_does_not_move_the_price() -> None:
    engine, _ = run([created(), trade(100, after=0.7), trade(50, amount=3, before=0.5, after=0.2)])
    s = engine.markets["m"]
    assert features_of(engine)["current_price"] == 0.7
    assert [w[3] for w in s.window] == [0.2, 0.7]
    assert features_of(engine)["total_volume"] == 13.0


def test_an_event_far_outside_grace_counts_in_totals_only() -> None:
    engine, _ = run([created(), trade(10_000, after=0.7)])
    before = features_of(engine)
    run([trade(10_000 - DEFAULT.grace_s - 1, user="bob", amount=5, after=0.1)], engine)
    after = features_of(engine)
    assert after["total_volume"] == before["total_volume"] + 5 and after["trade_count"] == 2
    assert after["participant_count"] == 2
    assert len(engine.markets["m"].window) == 1 and after["current_price"] == 0.7
    assert after["price_volatility"] == before["price_volatility"]
    assert engine.late == {"trade": 1, "signal": 0}  # om_feature_late_events_total
    run([signal(10_000 - DEFAULT.grace_s - 1), signal(10_000 - DEFAULT.grace_s)], engine)
    assert engine.late == {"trade": 1, "signal": 1}  # exactly at the grace's edge is in time


def _stream(draw: st.DrawFn, span_s: float) -> list[Any]:
    n = draw(st.integers(1, 40))
    events: list[Any] = []
    for i in range(n):
        s = draw(st.floats(0, span_s, allow_nan=False))
        if draw(st.booleans()):
            p0, p1 = draw(st.floats(0, 1)), draw(st.floats(0, 1))
            amount = draw(st.sampled_from([0.1, 1.0, 2.5, 10.0, 1234.5678]))
            events.append(trade(s, user=f"u{i % 7}", amount=amount, before=p0, after=p1))
        else:
            events.append(signal(s, kind=draw(st.sampled_from(["news", "social"])), score=draw(st.floats(-1, 1))))
    return events


@st.composite
def shuffled_within_grace(draw: st.DrawFn) -> tuple[list[Any], list[Any]]:
    events = _stream(draw, DEFAULT.grace_s - 1)
    return events, draw(st.permutations(events))


@settings(max_examples=60, deadline=None)
@given(shuffled_within_grace())
def test_any_order_within_grace_gives_the_same_final_state_and_features(case: tuple[list[Any], list[Any]]) -> None:
    events, shuffled = case
    a, _ = run([created(), *events])
    b, _ = run([created(), *shuffled])
    assert a.markets["m"].semantic() == b.markets["m"].semantic()
    assert features_of(a) == features_of(b)
    for engine in (a, b):  # late trades were inserted mid-window: the flat prices compute reads followed them
        assert_prices_mirror_window(engine.markets["m"])


def assert_prices_mirror_window(s: MarketState) -> None:
    assert s.prices.tolist() == [x for _, _, before, after, amount in s.window for x in (before, after, amount)]


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_the_same_events_in_the_same_order_give_identical_vectors(data: st.DataObject) -> None:
    events = [created(), *data.draw(st.builds(lambda: None).flatmap(lambda _: st.composite(_stream)(3 * 3600.0)))]
    _, first = run(events)
    _, second = run(events)
    assert first.vectors == second.vectors and first.snapshots == second.snapshots


# --- bounded state ----------------------------------------------------------------------------------------


def test_state_does_not_grow_with_trades() -> None:
    engine = Engine()
    run([created()], engine)
    sizes = []
    for chunk in range(4):
        run([trade(chunk * 20_000 + i * 2, user=f"u{i}") for i in range(10_000)], engine)
        sizes.append(len(pickle.dumps(engine.markets["m"])))
    # 10,000 then 40,000 trades: the same band (the dedupe ids of the grace period come and go), never a trend
    assert max(sizes) < 24_000 and sizes[-1] <= max(sizes[:2]), sizes


# --- coalescing, ids, snapshots ---------------------------------------------------------------------------


def test_a_burst_within_100_ms_of_event_time_is_one_vector_and_the_last_is_always_published() -> None:
    burst = [trade(10 + i * 0.01, user=f"u{i}") for i in range(9)]  # 80 ms
    engine, out = run([created(), *burst, trade(20.0)])
    # created (0 s), the burst (published when 20 s starts a new bucket), and the last trade at batch end
    assert [v.as_of for v in out.vectors] == [at(0).timestamp(), at(10.08).timestamp(), at(20).timestamp()]
    assert out.vectors[1].features["trade_count"] == 9
    assert out.vectors[1].event_id == vector_id("m", str(burst[-1].event_id))
    assert vector_id("m", "e1") == str(uuid.uuid5(VECTOR_NAMESPACE, "m:e1"))
    assert out.vectors[1].source_event_id == str(burst[-1].event_id)


def test_at_most_one_vector_per_100_ms_of_event_time_across_batch_boundaries() -> None:
    """Batches split a burst anywhere (fetch sizes, arrival timing): the vectors must not depend on it. Before, each
    batch's end published its markets, so a burst split in two gave two vectors within 100 ms."""
    engine = Engine()
    burst = [trade(10 + i * 0.02, user=f"u{i}") for i in range(4)]  # 60 ms of event time
    outs = [engine.process([(e, 0, e)]) for e in [created(), *burst]]  # one event per batch
    vectors = [v for out in outs for v in out.vectors]
    assert [v.as_of for v in vectors] == [at(0).timestamp()]  # the creation, closed by the burst's start
    # another market's later event in the partition closes the bucket
    other = engine.process([(created("n"), 0, None), (trade(10.15, market="n"), 0, None)])
    [closed] = [v for v in other.vectors if v.market_id == "m"]
    assert closed.market_id == "m" and closed.features["trade_count"] == 4
    assert closed.source_event_id == str(burst[-1].event_id)
    # A burst at the very end of the stream goes out when the stream goes idle, once.
    engine.process([(trade(20.0), 0, None)])
    [last] = engine.flush().vectors
    assert last.features["trade_count"] == 5 and engine.flush().vectors == []
    # One event per batch and one batch for everything give the same vectors.
    events = [created(), *burst, trade(20.0)]
    _, whole = run(events)
    split = Engine()
    pieces = [split.process([(e, 0, e)]).vectors for e in events]
    assert [v.event_id for p in pieces for v in p] + [v.event_id for v in split.flush().vectors] == [
        v.event_id for v in whole.vectors
    ]


def test_snapshots_follow_an_event_time_cadence_and_the_close() -> None:
    engine = Engine(EngineConfig(snapshot_every_s=3600))
    events = [created(), *(trade(h * 1800) for h in range(1, 6))]  # every 30 min for 2.5 h
    events.append(MarketClosed(occurred_at=at(3 * 3600), producer="t", market_id="m"))
    events.append(trade(3 * 3600 + 60))  # after the close: applied, never published
    _, out = run(events, engine)
    assert [v.as_of - T0.timestamp() for v in out.snapshots] == [0, 3600, 7200, 9000]
    assert max(v.as_of for v in out.vectors) == at(9000).timestamp()
    assert engine.markets["m"].trade_count == 6


def test_encoded_vectors_are_valid_contract_events() -> None:
    _, out = run([created(), trade(1), signal(2)])
    for v in out.vectors:
        event = decode(FEATURE_VECTORS, encode_vector(v, "2026-01-01T00:00:00Z"))
        assert isinstance(event, FeatureVectorComputed)
        assert str(event.event_id) == v.event_id and event.occurred_at.timestamp() == v.as_of
        assert event.features.model_dump() == v.features


# --- bad input ---------------------------------------------------------------------------------------------


def test_events_for_an_unknown_market_are_held_until_it_is_created() -> None:
    engine, out = run([trade(1, market="late"), signal(2, market="late")])
    assert out.vectors == [] and len(engine.markets["late"].held) == 2 and engine.held_total == 2
    _, out = run([created("late")], engine)
    assert engine.markets["late"].trade_count == 1 and engine.held_total == 0
    assert out.vectors[-1].features["news_sentiment"] == 0.5


def test_the_hold_is_bounded_and_overflow_is_rejected_with_a_reason() -> None:
    engine = Engine(EngineConfig(max_held_per_market=2))
    _, out = run([trade(i, market="ghost") for i in range(3)], engine)
    assert len(engine.markets["ghost"].held) == 2
    [(ref, reason)] = out.rejected
    assert "unknown" in reason and ref.market_id == "ghost"


def test_non_finite_numbers_never_enter_state() -> None:
    engine, _ = run([created(), trade(1)])
    before = engine.markets["m"].semantic()
    bad = trade(2).model_copy(update={"amount": math.inf})
    _, out = run([bad], engine)
    assert engine.markets["m"].semantic() == before
    assert len(out.rejected) == 1 and "finite" in out.rejected[0][1]


def test_a_repeated_event_changes_nothing() -> None:
    t = trade(1)
    engine, out = run([created(), t, t])
    assert engine.markets["m"].trade_count == 1 and out.duplicates == 1


def test_events_got_again_are_deduped_by_id_only_however_old() -> None:
    """After the broker lost its log, events come again: one applied before changes nothing, even far older than
    the grace period; one never applied is applied, even far too late (totals only, as any late event)."""
    engine, _ = run([created(), trade(0), trade(1000)])
    old, never_applied = trade(0, user="again"), trade(10, user="new")
    _, _ = run([old], engine)
    before = engine.markets["m"].semantic()
    _, out = run([old, trade(1000, event_id=old.event_id)], engine)  # the same ids again
    assert out.duplicates == 2 and engine.markets["m"].semantic() == before
    _, out = run([never_applied], engine)  # 990 s late, grace 300 s: applied to totals
    s = engine.markets["m"]
    assert out.duplicates == 0 and s.trade_count == 4 and s.participants.count() == 3


def test_an_event_again_on_another_partition_is_still_a_duplicate() -> None:
    """A topic re-created with another partition count (a broker that lost it) moves a market's events to another
    partition number: the ids follow the market's state, not the partition an event arrives on."""
    t = trade(1)
    engine, _ = run([created(), t])
    out = engine.process([(t, 3, t)])
    assert out.duplicates == 1 and engine.markets["m"].trade_count == 1


def test_applied_ids_are_forgotten_after_the_dedupe_window_from_their_checkpoint() -> None:
    engine = Engine(EngineConfig(dedupe_window_s=60))
    t1, t2 = trade(1), trade(2)
    run([created(), t1], engine)
    assert engine.fresh_applied() == {0: [t1.event_id.int >> 64]}
    engine.seal_applied(now=1_000.0)  # t1 saved by a checkpoint at 1,000 s
    assert engine.fresh_applied() == {}
    run([t2], engine)
    engine.seal_applied(now=1_050.0)
    _, out = run([t1, t2], engine)
    assert out.duplicates == 2
    engine.seal_applied(now=1_061.0)  # t1's checkpoint left the window; t2's did not
    _, out = run([t1, t2], engine)
    assert out.duplicates == 1 and engine.markets["m"].trade_count == 3
    restored = Engine(EngineConfig(dedupe_window_s=60))  # another process loads the saved chunks
    restored.adopt_applied(0, [(1_050.0, [t2.event_id.int >> 64])])
    run([created(), t2], restored)
    assert restored.markets["m"].trade_count == 0


def test_market_state_survives_pickling() -> None:
    engine, _ = run([created(), trade(1), signal(2)])
    s = engine.markets["m"]
    loaded = pickle.loads(pickle.dumps(s))  # nosec B301
    assert loaded.semantic() == s.semantic()
    assert loaded.prices == s.prices and len(s.prices) == 3  # not checkpointed: rebuilt from the window on load
    assert "prices" not in s.__getstate__()
    assert isinstance(MarketState("x").semantic(), tuple)
