"""feature's streaming features as pure functions of a market's state and the next event: exact values,
out-of-order trades, the bounded price window, sentiment smoothing and the vector the product sees."""

from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from om_contracts import FeatureVectorComputed, MarketFeatures, SignalObserved, decode, encode
from om_contracts.topics import FEATURE_VECTORS
from om_feature import features
from om_feature.features import SENTIMENT_ALPHA, WINDOW, MarketState

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def trade(state: MarketState, price: float, *, at: datetime, amount: float = 10.0, new: bool = True) -> MarketState:
    return features.on_trade(state, price_after=price, amount=amount, executed_at=at, new_participant=new)


def prices(state: MarketState) -> tuple[float, ...]:
    return tuple(price for _, price in state.recent_trades)


def created(close_at: datetime) -> MarketState:
    return features.on_created(MarketState("m-1"), category="c", close_at=close_at, initial_price=0.5)


def test_constants() -> None:
    assert WINDOW == 20
    assert SENTIMENT_ALPHA == 0.3


def test_new_state_defaults() -> None:
    s = MarketState("m-1")
    assert (s.status, s.current_price, s.total_volume) == ("open", 0.5, 0.0)
    assert (s.trade_count, s.participant_count) == (0, 0)
    assert prices(s) == () and s.close_at is None and s.last_trade_at is None


# --- on_created -------------------------------------------------------------------------------------


def test_created_sets_category_close_and_opening_price() -> None:
    close_at = T0 + timedelta(days=2)
    s = features.on_created(MarketState("m-1"), category="sports", close_at=close_at, initial_price=0.3)
    assert (s.category, s.close_at, s.current_price) == ("sports", close_at, 0.3)
    assert s.trade_count == 0 and prices(s) == ()


def test_created_after_a_trade_keeps_the_trade_price() -> None:
    s = trade(MarketState("m-1"), 0.8, at=T0)
    s = features.on_created(s, category="politics", close_at=T0 + timedelta(days=1), initial_price=0.2)
    assert s.current_price == 0.8
    assert s.category == "politics"
    assert s.trade_count == 1 and prices(s) == (0.8,)


def test_created_does_not_mutate_the_input_state() -> None:
    before = MarketState("m-1")
    features.on_created(before, category="x", close_at=T0, initial_price=0.9)
    assert before == MarketState("m-1")


# --- on_trade ---------------------------------------------------------------------------------------


def test_trades_accumulate_volume_count_and_participants() -> None:
    s = MarketState("m-1")
    s = trade(s, 0.55, at=T0, amount=10.0, new=True)
    s = trade(s, 0.60, at=T0 + timedelta(minutes=1), amount=2.5, new=True)
    s = trade(s, 0.58, at=T0 + timedelta(minutes=2), amount=7.5, new=False)  # a repeat trader
    assert s.total_volume == 20.0
    assert s.trade_count == 3
    assert s.participant_count == 2
    assert s.current_price == 0.58
    assert s.last_trade_at == T0 + timedelta(minutes=2)
    assert prices(s) == (0.55, 0.60, 0.58)


def test_late_trade_counts_but_does_not_move_the_price() -> None:
    s = trade(MarketState("m-1"), 0.7, at=T0 + timedelta(hours=1), amount=5.0)
    s = trade(s, 0.2, at=T0, amount=3.0)
    assert s.current_price == 0.7
    assert s.last_trade_at == T0 + timedelta(hours=1)
    assert s.total_volume == 8.0
    assert s.trade_count == 2
    assert s.participant_count == 2
    assert prices(s) == (0.2, 0.7)  # the late trade takes its place in event-time order


def test_trade_at_same_instant_as_latest_moves_the_price() -> None:
    s = trade(MarketState("m-1"), 0.7, at=T0)
    s = trade(s, 0.4, at=T0)
    assert s.current_price == 0.4
    assert prices(s) == (0.7, 0.4)


@given(st.permutations(range(8)))
def test_volatility_and_momentum_do_not_depend_on_arrival_order(order: list[int]) -> None:
    price_at = [0.2, 0.8, 0.5, 0.4, 0.9, 0.1, 0.6, 0.3]
    in_time_order, shuffled = MarketState("m-1"), MarketState("m-1")
    for i in range(8):
        in_time_order = trade(in_time_order, price_at[i], at=T0 + timedelta(seconds=i))
    for i in order:
        shuffled = trade(shuffled, price_at[i], at=T0 + timedelta(seconds=i))
    expected, got = features.vector(in_time_order, T0), features.vector(shuffled, T0)
    assert got.price_volatility == pytest.approx(expected.price_volatility)
    assert got.momentum_indicator == pytest.approx(0.3 - 0.2)


def test_recent_prices_window_keeps_the_last_window_prices() -> None:
    s = MarketState("m-1")
    all_prices = [round(i / 100, 2) for i in range(WINDOW + 7)]
    for i, p in enumerate(all_prices):
        s = trade(s, p, at=T0 + timedelta(seconds=i))
        assert len(prices(s)) == min(i + 1, WINDOW)
    assert prices(s) == tuple(all_prices[-WINDOW:])
    assert s.trade_count == WINDOW + 7


@st.composite
def distinct_trades(draw: st.DrawFn) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """Trades (seconds, price, amount) with distinct event times, and a permutation of them."""
    times = draw(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=30, unique=True))
    amounts = st.sampled_from([0.5, 1.0, 2.0, 10.0, 100.0, 1234.0])
    trades = [(t, draw(st.floats(0.0, 1.0)), draw(amounts)) for t in times]
    return trades, draw(st.permutations(trades))


@given(distinct_trades())
def test_any_arrival_order_gives_the_same_totals_and_price(
    case: tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]],
) -> None:
    trades, shuffled = case

    def apply(order: list[tuple[int, float, float]]) -> MarketState:
        s = MarketState("m-1")
        for seconds, price, amount in order:
            s = trade(s, price, at=T0 + timedelta(seconds=seconds), amount=amount)
        return s

    a, b = apply(trades), apply(shuffled)
    latest_seconds, latest_price, _ = max(trades)
    for s in (a, b):
        assert s.trade_count == len(trades)
        # Amounts are dyadic-friendly values with small sums, so float addition is exact in any order.
        assert s.total_volume == sum(amount for _, _, amount in trades)
        assert s.current_price == latest_price
        assert s.last_trade_at == T0 + timedelta(seconds=latest_seconds)
    assert a.total_volume == b.total_volume


# --- on_signal --------------------------------------------------------------------------------------


def test_first_sentiment_is_taken_as_is_then_smoothed() -> None:
    s = features.on_signal(MarketState("m-1"), kind="social", sentiment=0.5)
    assert s.social_sentiment == 0.5
    s = features.on_signal(s, kind="social", sentiment=-0.5)
    assert s.social_sentiment == pytest.approx(0.3 * -0.5 + 0.7 * 0.5)  # 0.2
    s = features.on_signal(s, kind="social", sentiment=1.0)
    assert s.social_sentiment == pytest.approx(0.3 * 1.0 + 0.7 * 0.2)  # 0.44
    assert s.news_sentiment is None


def test_unscored_signal_changes_nothing() -> None:
    s = features.on_signal(MarketState("m-1"), kind="news", sentiment=-0.4)
    assert features.on_signal(s, kind="news", sentiment=None) == s
    assert features.on_signal(MarketState("m-1"), kind="social", sentiment=None) == MarketState("m-1")


def test_social_and_news_are_tracked_separately() -> None:
    s = MarketState("m-1")
    s = features.on_signal(s, kind="news", sentiment=-1.0)
    s = features.on_signal(s, kind="social", sentiment=0.8)
    s = features.on_signal(s, kind="news", sentiment=1.0)
    assert s.social_sentiment == 0.8
    assert s.news_sentiment == pytest.approx(0.3 * 1.0 + 0.7 * -1.0)


@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=40))
def test_smoothed_sentiment_is_the_ewma_and_stays_in_range(values: list[float]) -> None:
    s = MarketState("m-1")
    expected = None
    for v in values:
        s = features.on_signal(s, kind="news", sentiment=v)
        expected = v if expected is None else 0.3 * v + 0.7 * expected
    assert s.news_sentiment == pytest.approx(expected, abs=1e-12)
    assert min(values) - 1e-12 <= s.news_sentiment <= max(values) + 1e-12
    assert s.social_sentiment is None


def test_on_status_only_changes_status() -> None:
    s = trade(MarketState("m-1"), 0.6, at=T0)
    closed = features.on_status(s, "closed")
    assert closed.status == "closed"
    assert replace(closed, status="open") == s


# --- vector -----------------------------------------------------------------------------------------


def test_days_remaining_from_close_at_and_as_of() -> None:
    s = created(T0 + timedelta(days=3))
    assert features.vector(s, T0).days_remaining == 3.0
    assert features.vector(s, T0 + timedelta(hours=36)).days_remaining == 1.5
    assert features.vector(s, T0 + timedelta(days=3)).days_remaining == 0.0


def test_days_remaining_is_never_negative() -> None:
    s = created(T0)
    assert features.vector(s, T0 + timedelta(days=10)).days_remaining == 0.0


def test_days_remaining_unknown_before_creation_is_seen() -> None:
    assert features.vector(MarketState("m-1"), T0).days_remaining is None


def test_volatility_and_momentum_need_two_prices() -> None:
    v0 = features.vector(MarketState("m-1"), T0)
    assert (v0.price_volatility, v0.momentum_indicator) == (None, None)
    v1 = features.vector(trade(MarketState("m-1"), 0.6, at=T0), T0)
    assert (v1.price_volatility, v1.momentum_indicator) == (None, None)
    assert v1.current_price == 0.6


def test_volatility_is_population_stdev_and_momentum_is_current_minus_oldest() -> None:
    s = MarketState("m-1")
    for i, p in enumerate([0.2, 0.4, 0.6, 0.8]):
        s = trade(s, p, at=T0 + timedelta(seconds=i))
    v = features.vector(s, T0)
    assert v.price_volatility == statistics.pstdev([0.2, 0.4, 0.6, 0.8])
    assert v.price_volatility == pytest.approx(0.223606797749979)  # not the sample stdev (0.258...)
    assert v.momentum_indicator == pytest.approx(0.6)


def test_momentum_uses_the_oldest_price_still_in_the_window() -> None:
    s = MarketState("m-1")
    for i in range(WINDOW + 5):
        s = trade(s, 0.01 * i, at=T0 + timedelta(seconds=i))
    v = features.vector(s, T0)
    assert v.momentum_indicator == pytest.approx(0.01 * (WINDOW + 4) - 0.01 * 5)
    assert v.price_volatility == statistics.pstdev([0.01 * i for i in range(5, WINDOW + 5)])


def test_vector_carries_counts_and_sentiments() -> None:
    s = created(T0 + timedelta(days=1))
    s = trade(s, 0.6, at=T0, amount=4.0)
    s = trade(s, 0.65, at=T0 + timedelta(seconds=1), amount=6.0, new=False)
    s = features.on_signal(s, kind="social", sentiment=0.25)
    s = features.on_signal(s, kind="news", sentiment=-0.75)
    v = features.vector(s, T0)
    assert isinstance(v, MarketFeatures)
    assert (v.current_price, v.total_volume, v.trade_count, v.participant_count) == (0.65, 10.0, 2, 1)
    assert (v.social_sentiment, v.news_sentiment) == (0.25, -0.75)
    assert v.days_remaining == 1.0
    # Not computed by this version: left unknown rather than invented.
    assert v.volume_trend is None and v.historical_accuracy is None
    assert v.category_risk is None and v.liquidity_score is None


@given(
    st.lists(
        st.tuples(st.integers(0, 100_000), st.floats(0.0, 1.0), st.floats(0.01, 1e6), st.booleans()),
        max_size=40,
    ),
    st.lists(st.tuples(st.sampled_from(["social", "news"]), st.none() | st.floats(-1.0, 1.0)), max_size=10),
    st.integers(-200_000, 200_000),
)
def test_vector_always_validates_as_market_features(
    trades: list[tuple[int, float, float, bool]], signals: list[tuple[str, float | None]], as_of_s: int
) -> None:
    s = created(T0 + timedelta(days=1))
    for seconds, price, amount, new in trades:
        s = trade(s, price, at=T0 + timedelta(seconds=seconds), amount=amount, new=new)
    for kind, sentiment in signals:
        s = features.on_signal(s, kind=kind, sentiment=sentiment)
    v = features.vector(s, T0 + timedelta(seconds=as_of_s))
    again = MarketFeatures.model_validate(v.model_dump())
    assert again == v
    assert v.days_remaining is not None and v.days_remaining >= 0
    # And it travels inside the event that carries it.
    event = FeatureVectorComputed(
        occurred_at=T0, producer="feature", market_id="m-1", category="c", features=v, source_event_id="src"
    )
    assert decode(FEATURE_VECTORS, encode(event)).features == v


def test_unscored_signal_text_is_scored_and_a_source_score_is_kept() -> None:
    def signal(text: str, sentiment: float | None) -> SignalObserved:
        return SignalObserved(
            occurred_at=T0, producer="t", signal_id=text[:8], market_id="m-1", kind="news", source="wire",
            text=text, sentiment=sentiment,
        )  # fmt: skip

    good = features.apply(MarketState("m-1"), signal("Great news: the bill passed with strong support", None))
    bad = features.apply(MarketState("m-1"), signal("Terrible setback, the bill failed and support collapsed", None))
    kept = features.apply(MarketState("m-1"), signal("Great news: the bill passed with strong support", -0.25))
    assert good.news_sentiment is not None and good.news_sentiment > 0.3
    assert bad.news_sentiment is not None and bad.news_sentiment < -0.3
    assert kept.news_sentiment == -0.25
    assert good.social_sentiment is None
