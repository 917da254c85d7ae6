"""Unit tests of the market simulator: the LMSR maker, the simulated world, and the runner against an
in-process fake of the gateway's HTTP API (httpx.MockTransport; no network)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from om_cli.simulator import runner as runner_module
from om_cli.simulator.agents import InformedStrategy, NoiseStrategy, make_population
from om_cli.simulator.lmsr import LMSR, logit
from om_cli.simulator.runner import SimulationError, add_arguments, run_from_args, simulate
from om_cli.simulator.world import (
    CancelMarket,
    CloseMarket,
    CreateMarket,
    ResolveMarket,
    World,
    WorldConfig,
    draw_market,
)

SETTINGS = settings(max_examples=100, deadline=None, database=None)
T0 = datetime(2030, 1, 1, tzinfo=UTC)
ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

liquidity = st.floats(min_value=1.0, max_value=1000.0)
initial_price = st.floats(min_value=0.001, max_value=0.999)
outcome = st.sampled_from(["YES", "NO"])
# trades measured in units of b keep the log-odds within ~±15, where both prices stay strictly in (0, 1)
trade_sizes = st.lists(st.tuples(outcome, st.floats(min_value=-1.0, max_value=1.0)), max_size=8)


def _maker(b: float, p0: float, trades: list[tuple[str, float]]) -> LMSR:
    m = LMSR.with_price(b, p0)
    for o, size in trades:
        shares = abs(size) * b
        if size >= 0:
            m.buy(o, shares)  # type: ignore[arg-type]
        else:
            m.sell(o, shares)  # type: ignore[arg-type]
    return m


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * scale)


# ---- LMSR ------------------------------------------------------------------------------------


@SETTINGS
@given(liquidity, initial_price, trade_sizes)
def test_prices_are_probabilities_that_sum_to_one(b: float, p0: float, trades: list) -> None:
    m = _maker(b, p0, trades)
    p_yes, p_no = m.price("YES"), m.price("NO")
    assert 0.0 < p_yes < 1.0 and 0.0 < p_no < 1.0
    assert math.isclose(p_yes + p_no, 1.0, rel_tol=0, abs_tol=1e-12)
    assert m.prices() == (p_yes, 1.0 - p_yes)


@SETTINGS
@given(liquidity, initial_price)
def test_starts_at_the_initial_price(b: float, p0: float) -> None:
    m = LMSR.with_price(b, p0)
    assert math.isclose(m.price("YES"), p0, rel_tol=1e-12, abs_tol=1e-12)
    assert _close(m.worst_case_loss(), b * math.log(1 / min(p0, 1 - p0)), b)


def test_worst_case_loss_from_even_odds_is_b_ln_2() -> None:
    assert math.isclose(LMSR(b=100.0).worst_case_loss(), 100.0 * math.log(2))
    with pytest.raises(ValueError):
        LMSR.with_price(100.0, 1.0)
    with pytest.raises(ValueError):
        LMSR(b=0.0)


@SETTINGS
@given(liquidity, initial_price, trade_sizes, outcome, st.floats(min_value=1e-3, max_value=3.0))
def test_buying_an_outcome_raises_its_price(b: float, p0: float, trades: list, o: str, size: float) -> None:
    m = _maker(b, p0, trades)
    before = m.price(o)  # type: ignore[arg-type]
    other = m.price("NO" if o == "YES" else "YES")
    cost = m.buy(o, size * b)  # type: ignore[arg-type]
    assert cost > 0
    assert m.price(o) > before  # type: ignore[arg-type]
    assert m.price("NO" if o == "YES" else "YES") < other
    # the average price paid lies between the prices before and after
    assert before - 1e-12 <= cost / (size * b) <= m.price(o) + 1e-12  # type: ignore[arg-type]


@SETTINGS
@given(
    liquidity,
    initial_price,
    trade_sizes,
    outcome,
    st.floats(min_value=0.0, max_value=3.0),
    st.floats(min_value=0.0, max_value=3.0),
)
def test_cost_is_path_independent(b: float, p0: float, trades: list, o: str, x: float, y: float) -> None:
    m = _maker(b, p0, trades)
    at_once = m.cost(o, (x + y) * b)  # type: ignore[arg-type]
    c_before = m.cost_function()
    first = m.buy(o, x * b)  # type: ignore[arg-type]
    second = m.buy(o, y * b)  # type: ignore[arg-type]
    assert _close(first + second, at_once, b)
    # and it is the change of the cost function C(q)
    assert _close(m.cost_function() - c_before, at_once, b)


@SETTINGS
@given(liquidity, initial_price, trade_sizes, outcome, st.floats(min_value=1e-3, max_value=3.0))
def test_selling_what_was_bought_refunds_the_cost(b: float, p0: float, trades: list, o: str, size: float) -> None:
    m = _maker(b, p0, trades)
    price = m.price("YES")
    cost = m.buy(o, size * b)  # type: ignore[arg-type]
    proceeds = m.sell(o, size * b)  # type: ignore[arg-type]
    assert _close(proceeds, cost, b)
    assert math.isclose(m.price("YES"), price, rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(liquidity, initial_price, trade_sizes, outcome, st.floats(min_value=1e-6, max_value=50.0))
def test_shares_for_amount_inverts_the_cost(b: float, p0: float, trades: list, o: str, spend: float) -> None:
    m = _maker(b, p0, trades)
    amount = spend * b
    shares = m.shares_for_amount(o, amount)  # type: ignore[arg-type]
    assert shares > 0
    assert math.isclose(m.cost_to_buy(o, shares), amount, rel_tol=1e-9)  # type: ignore[arg-type]
    bought = m.spend(o, amount)  # type: ignore[arg-type]
    assert bought == shares


@SETTINGS
@given(liquidity, initial_price, trade_sizes, outcome, st.floats(min_value=1e-6, max_value=0.999))
def test_shares_for_proceeds_inverts_the_sale(b: float, p0: float, trades: list, o: str, fraction: float) -> None:
    m = _maker(b, p0, trades)
    amount = fraction * m.max_proceeds(o)  # type: ignore[arg-type]
    shares = m.shares_for_proceeds(o, amount)  # type: ignore[arg-type]
    assert shares > 0
    assert math.isclose(m.proceeds_from_sell(o, shares), amount, rel_tol=1e-7)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.shares_for_proceeds(o, m.max_proceeds(o))  # type: ignore[arg-type]


@SETTINGS
@given(liquidity, initial_price, outcome, st.floats(min_value=0.01, max_value=0.99))
def test_shares_to_price_reaches_the_target(b: float, p0: float, o: str, target: float) -> None:
    m = LMSR.with_price(b, p0)
    shares = m.shares_to_price(o, target)  # type: ignore[arg-type]
    if shares >= 0:
        m.buy(o, shares)  # type: ignore[arg-type]
    else:
        m.sell(o, -shares)  # type: ignore[arg-type]
    assert math.isclose(m.price(o), target, rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]


def test_extreme_amounts_do_not_overflow() -> None:
    m = LMSR.with_price(1.0, 0.5)
    shares = m.shares_for_amount("YES", 1e6)
    assert math.isclose(shares, 1e6 + math.log(2), rel_tol=1e-12)
    assert math.isclose(m.cost_to_buy("YES", shares), 1e6, rel_tol=1e-12)
    assert math.isclose(logit(0.75), math.log(3))


# ---- traders and the world ----------------------------------------------------------------------


def test_informed_traders_move_prices_toward_the_truth() -> None:
    # bandit: simulation randomness, seeded for reproducibility; not used for security
    rng = random.Random(2024)  # nosec B311
    traders = make_population(rng, 200, informed_fraction=1.0)
    strategy = InformedStrategy()
    errors_before, errors_after, helpful, trades = [], [], 0, 0
    for n in range(300):
        truth = rng.betavariate(0.8, 0.8)
        maker = LMSR.with_price(rng.uniform(60, 400), round(rng.uniform(0.1, 0.9), 2))
        errors_before.append(abs(maker.price() - truth))
        for _ in range(40):
            trader = rng.choice(traders)
            order = strategy.decide(rng, trader, f"m{n}", maker, truth)
            if order is None:
                continue
            before = abs(maker.price() - truth)
            (maker.buy if order.side == "BUY" else maker.sell)(order.outcome, order.shares)
            trader.record(f"m{n}", order)
            trades += 1
            helpful += abs(maker.price() - truth) < before
        errors_after.append(abs(maker.price() - truth))
    assert trades > 3000
    assert statistics.mean(errors_after) < 0.5 * statistics.mean(errors_before)
    assert helpful / trades > 0.5  # most single trades help, too


def test_a_mixed_crowd_still_pulls_prices_toward_the_truth() -> None:
    # without the longshot bias, which by design pulls prices of near-certain outcomes towards 0.5
    world = World(7, WorldConfig(markets=60, market_lifetime_s=1e6, noise=NoiseStrategy(longshot_bias=0.0)))
    world.due_lifecycle(T0)
    markets = world.open_markets()
    before = statistics.mean(abs(m.price - m.truth) for m in markets)
    for _ in range(8000):
        assert world.next_trade(T0) is not None
    after = statistics.mean(abs(m.price - m.truth) for m in markets)
    assert after < 0.85 * before
    kinds = Counter(t.kind for t in world.traders)
    assert kinds["informed"] > 0 and kinds["noise"] > kinds["informed"]


def _script(world: World, *, minutes: int = 4) -> list[tuple[str, Any]]:
    """Drive a world through `minutes` of simulated time: every 0.5 s the due actions, 3 trades and
    sometimes a signal; then settle everything."""
    out: list[tuple[str, Any]] = []
    for step in range(minutes * 120):
        now = T0 + timedelta(seconds=step / 2)
        out.extend(a.request() for a in world.due_lifecycle(now))
        for _ in range(3):
            if (t := world.next_trade(now)) is not None:
                out.append(t.request())
        if step % 4 == 0 and (s := world.next_signal(now)) is not None:
            out.append(s.request())
    out.extend(a.request() for a in world.settle_all())
    return out


def test_the_world_is_deterministic_given_the_seed() -> None:
    config = WorldConfig(markets=5, market_lifetime_s=40.0)
    first, again, other = (_script(World(s, config)) for s in (11, 11, 12))
    assert first == again
    assert first != other
    assert len(first) > 1000


def test_the_life_cycle_keeps_n_markets_open_and_orders_every_market_s_events() -> None:
    config = WorldConfig(markets=5, market_lifetime_s=40.0)
    world = World(3, config, run_id="r1")
    created: dict[str, dict[str, Any]] = {}
    phase: dict[str, str] = {}
    net: dict[tuple[str, str, str], float] = defaultdict(float)
    trades = 0
    for step in range(4 * 120):
        now = T0 + timedelta(seconds=step / 2)
        for action in world.due_lifecycle(now):
            if isinstance(action, CreateMarket):
                assert action.market_id not in created
                created[action.market_id] = {"close_at": action.close_at}
                phase[action.market_id] = "open"
            elif isinstance(action, CloseMarket):
                assert phase[action.market_id] == "open" and now >= created[action.market_id]["close_at"]
                phase[action.market_id] = "closed"
            else:
                assert phase[action.market_id] == "closed"
                phase[action.market_id] = "settled"
        assert len(world.open_markets(now)) == config.markets
        for _ in range(3):
            t = world.next_trade(now)
            assert t is not None
            body = t.body()
            assert phase[t.market_id] == "open" and now < created[t.market_id]["close_at"]
            assert ID.match(body["trade_id"]) and ID.match(body["market_id"])
            assert body["amount"] > 0 and body["shares"] > 0 and 0.0 <= body["price"] <= 1.0
            key = (t.user_id, t.market_id, t.outcome)
            net[key] += t.shares if t.side == "BUY" else -t.shares
            assert net[key] >= -1e-6, "a user sold shares they did not hold"
            trades += 1
    assert all(m.startswith("sim-3-r1-") for m in created)
    assert sum(p == "settled" for p in phase.values()) >= 20
    assert trades == world.trades_made
    with pytest.raises(ValueError):
        World(3, config, run_id="no spaces")


def test_resolutions_follow_the_hidden_probabilities() -> None:
    # bandit: simulation randomness, seeded for reproducibility; not used for security
    rng = random.Random(99)  # nosec B311
    config = WorldConfig()
    markets = [draw_market(rng, config, f"m{i}", T0) for i in range(8000)]
    binary = [m for m in markets if m.fate in ("YES", "NO")]
    yes = sum(m.fate == "YES" for m in binary)
    expected = sum(m.truth for m in binary)
    sd = math.sqrt(sum(m.truth * (1 - m.truth) for m in binary))
    assert abs(yes - expected) < 4 * sd
    for lo in (0.0, 0.2, 0.4, 0.6, 0.8):
        in_bin = [m for m in binary if lo <= m.truth < lo + 0.2]
        freq = sum(m.fate == "YES" for m in in_bin) / len(in_bin)
        assert abs(freq - statistics.mean(m.truth for m in in_bin)) < 0.05
    fates = Counter(m.fate for m in markets)
    assert abs(fates["CANCEL"] / len(markets) - config.p_cancel) < 0.01
    assert abs(fates["MKT"] / len(markets) - config.p_mkt) < 0.01
    for m in markets[:500]:
        action = m.settle_action()
        if m.fate == "CANCEL":
            assert isinstance(action, CancelMarket) and action.reason
        elif m.fate == "MKT":
            assert isinstance(action, ResolveMarket) and action.resolution_price == round(m.truth, 4)
        else:
            assert isinstance(action, ResolveMarket) and action.resolution == m.fate
            assert "resolution_price" not in action.request()[1]  # type: ignore[operator]


def test_news_sentiment_tracks_the_truth_better_than_social() -> None:
    world = World(5, WorldConfig(markets=40, market_lifetime_s=1e6))
    world.due_lifecycle(T0)
    truth = {m.market_id: m.truth for m in world.open_markets()}
    by_kind: dict[str, list[tuple[float, float]]] = defaultdict(list)
    nulls = 0
    for _ in range(4000):
        s = world.next_signal(T0)
        assert s is not None
        _, body = s.request()
        assert body is not None and body["text"] and 1 <= len(body["source"]) <= 128
        if s.sentiment is None:
            nulls += 1
            assert s.kind == "social"
            continue
        assert -1.0 <= s.sentiment <= 1.0
        by_kind[s.kind].append((truth[s.market_id], s.sentiment))
    corr = {k: statistics.correlation(*zip(*pairs, strict=True)) for k, pairs in by_kind.items()}
    assert corr["news"] > corr["social"] > 0.3
    assert 0.2 < len(by_kind["news"]) / 4000 < 0.4
    assert nulls > 0


def test_user_activity_is_zipf_like() -> None:
    world = World(8, WorldConfig(markets=8, market_lifetime_s=1e6, users=500))
    world.due_lifecycle(T0)
    users = Counter(t.user_id for t in (world.next_trade(T0) for _ in range(5000)) if t is not None)
    ranked = [n for _, n in users.most_common()]
    assert sum(ranked[:50]) > 0.5 * sum(ranked)  # the top 10% of users make most trades
    assert users["user-1"] == ranked[0]
    assert all(ID.match(u) and u.startswith("user-") for u in users)


# ---- the runner against a fake gateway ----------------------------------------------------------


def _err(status: int, msg: str, loc: list[Any] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"detail": [{"loc": loc or ["body"], "msg": msg, "type": "test"}]})


def _time(value: Any) -> datetime:
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError("naive datetime")
    return t


class FakeGateway:
    """The gateway's public write API, in memory, with strict validation and fault injection.

    `faults` maps (route, n) — the n-th call to a route, counted from 1, "trades" standing for both
    trade routes — to "503", "connect" (fail before processing) or "lost" (process, then lose the
    response).
    """

    MARKET = {"market_id": str, "question": str, "category": str, "close_at": str, "initial_price": float}
    TRADE = {
        "trade_id": str,
        "market_id": str,
        "user_id": str,
        "outcome": str,
        "side": str,
        "amount": float,
        "shares": float,
        "price": float,
        "executed_at": str,
    }
    SIGNAL = {
        "signal_id": str,
        "market_id": str,
        "kind": str,
        "source": str,
        "text": str,
        "sentiment": (float, type(None)),
        "observed_at": str,
    }

    def __init__(self, faults: dict[tuple[str, int], str] | None = None, *, conflict_on_create: bool = False):
        self.faults = faults or {}
        self.conflict_on_create = conflict_on_create
        self.calls: Counter[str] = Counter()
        self.markets: dict[str, dict[str, Any]] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        self.signals: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []  # accepted writes, in order
        self.violations: list[str] = []
        self.injected: Counter[str] = Counter()
        self.trades_at_last_fault = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _violation(self, status: int, msg: str) -> httpx.Response:
        self.violations.append(msg)
        return _err(status, msg)

    def _check(self, body: Any, schema: dict[str, Any], required: set[str]) -> str | None:
        if not isinstance(body, dict):
            return "body must be an object"
        if unknown := set(body) - set(schema):
            return f"unknown fields {sorted(unknown)}"
        if missing := required - set(body):
            return f"missing fields {sorted(missing)}"
        for key, value in body.items():
            kind = schema[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind):
                return f"{key} has the wrong type"
        return None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method != "POST" or not path.startswith("/api/v1/"):
            return self._violation(404, f"unexpected {request.method} {path}")
        route = re.sub(r"/markets/[^/]+/", "/markets/{id}/", path)
        self.calls[route] += 1
        key = "trades" if route.startswith("/api/v1/trades") else route  # single and batch count together
        self.calls[key] += route != key
        fault = self.faults.get((key, self.calls[key]))
        if fault:
            self.injected[fault] += 1
            self.trades_at_last_fault = len(self.trades)
        if fault == "503":
            return _err(503, "service starting")
        if fault == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else None
        response = self.dispatch(route, path, body)
        if fault == "lost":
            raise httpx.ReadError("connection reset", request=request)
        return response

    def dispatch(self, route: str, path: str, body: Any) -> httpx.Response:
        if route == "/api/v1/markets":
            return self.create_market(body)
        if route == "/api/v1/trades":
            return self.record_trades([body], single=True)
        if route == "/api/v1/trades/batch":
            if not isinstance(body, dict) or set(body) != {"trades"} or not 1 <= len(body["trades"]) <= 1000:
                return self._violation(422, "bad batch")
            return self.record_trades(body["trades"], single=False)
        if route == "/api/v1/signals":
            return self.record_signal(body)
        market_id = path.split("/")[4]
        market = self.markets.get(market_id)
        if market is None:
            return self._violation(404, f"lifecycle call for unknown market {market_id}")
        action = path.rsplit("/", 1)[1]
        if action == "close":
            if body not in (None, {}):
                return self._violation(422, "close takes no body")
            if market["status"] != "open":
                return _err(409, f"market is {market['status']}")
            market["status"] = "closed"
        elif action == "resolve":
            if problem := self._check(body, {"resolution": str, "resolution_price": float}, {"resolution"}):
                return self._violation(422, problem)
            if body["resolution"] not in ("YES", "NO", "MKT"):
                return self._violation(422, "bad resolution")
            if (body["resolution"] == "MKT") != ("resolution_price" in body):
                return self._violation(422, "resolution_price is for MKT only")
            if market["status"] in ("resolved", "cancelled"):
                return _err(409, f"market is {market['status']}")
            market["status"] = "resolved"
            market["resolution"] = body["resolution"]
        elif action == "cancel":
            if problem := self._check(body, {"reason": str}, set()):
                return self._violation(422, problem)
            if market["status"] in ("resolved", "cancelled"):
                return _err(409, f"market is {market['status']}")
            market["status"] = "cancelled"
        else:
            return self._violation(404, f"unknown action {action}")
        self.events.append((action, market_id))
        return httpx.Response(200, json={"market_id": market_id, "status": market["status"]})

    def create_market(self, body: Any) -> httpx.Response:
        required = {"question", "category", "close_at"}
        if problem := self._check(body, self.MARKET, required):
            return self._violation(422, problem)
        if not ID.match(body["market_id"]) or not 0 <= body["initial_price"] <= 1:
            return self._violation(422, "bad market_id or initial_price")
        if not 1 <= len(body["question"]) <= 500 or not 1 <= len(body["category"]) <= 64:
            return self._violation(422, "bad question or category")
        close_at, created_at = _time(body["close_at"]), datetime.now(UTC)
        if close_at <= created_at:
            return self._violation(422, "close_at in the past")
        if self.conflict_on_create or body["market_id"] in self.markets:
            return _err(409, "market exists", ["body", "market_id"])
        self.markets[body["market_id"]] = {
            **body,
            "status": "open",
            "created_at": created_at,
            "close": close_at,
        }
        self.events.append(("create", body["market_id"]))
        return httpx.Response(201, json={**body, "status": "open"})

    def record_trades(self, trades: list[Any], *, single: bool) -> httpx.Response:
        new: list[dict[str, Any]] = []
        replayed = 0
        for t in trades:
            if problem := self._check(t, self.TRADE, set(self.TRADE) - {"trade_id", "executed_at"}):
                return self._violation(422, problem)
            if t["outcome"] not in ("YES", "NO") or t["side"] not in ("BUY", "SELL"):
                return self._violation(422, "bad outcome or side")
            if not (t["amount"] > 0 and t["shares"] > 0 and 0.0 <= t["price"] <= 1.0):
                return self._violation(422, f"bad amount/shares/price in {t}")
            if not 1 <= len(t["trade_id"]) <= 64 or not 1 <= len(t["user_id"]) <= 64:
                return self._violation(422, "bad ids")
            if t["trade_id"] in self.trades:
                if self.trades[t["trade_id"]] != t:
                    return self._violation(409, f"trade {t['trade_id']} replayed with different fields")
                replayed += 1
                continue
            market = self.markets.get(t["market_id"])
            if market is None:
                return self._violation(404, f"trade on unknown market {t['market_id']}")
            executed_at = _time(t["executed_at"])
            if market["status"] != "open" or executed_at >= market["close"]:
                return self._violation(409, f"trade on {market['status']} market {t['market_id']}")
            if executed_at < market["created_at"]:
                return self._violation(422, "trade executed before its market was created")
            new.append(t)
        for t in new:
            self.trades[t["trade_id"]] = t
            self.events.append(("trade", t["market_id"]))
        if single:
            return httpx.Response(201 if new else 200, json=trades[0])
        return httpx.Response(201, json={"recorded": len(new), "trades": trades})

    def record_signal(self, body: Any) -> httpx.Response:
        if problem := self._check(body, self.SIGNAL, set(self.SIGNAL) - {"signal_id", "observed_at"}):
            return self._violation(422, problem)
        if body["kind"] not in ("social", "news"):
            return self._violation(422, "bad kind")
        if body["sentiment"] is not None and not -1 <= body["sentiment"] <= 1:
            return self._violation(422, "bad sentiment")
        if body["market_id"] not in self.markets:
            return self._violation(404, "signal for an unknown market")
        self.signals[body["signal_id"]] = body
        self.events.append(("signal", body["market_id"]))
        return httpx.Response(201, json=body)


FAST = {"backoff_initial_s": 0.001, "backoff_max_s": 0.01, "retry_for_s": 2.0, "log_every_s": 0.25}
QUICK_WORLD = WorldConfig(close_margin_s=0.05, resolve_delay_s=0.05)


async def test_runner_drives_the_api_in_order_and_survives_transient_failures() -> None:
    gateway = FakeGateway(
        {
            ("/api/v1/markets", 1): "503",  # still starting
            ("/api/v1/markets", 2): "connect",
            ("/api/v1/markets", 3): "503",
            ("trades", 3): "connect",
            ("trades", 5): "503",
            ("trades", 8): "lost",  # recorded, but the response never arrives
            ("/api/v1/signals", 2): "connect",
        }
    )
    stats = await simulate(
        "http://gateway.test",
        rate=250.0,
        markets=4,
        seed=1,
        duration_s=1.0,
        market_lifetime_s=0.3,
        world_config=QUICK_WORLD,
        transport=gateway.transport(),
        **FAST,
    )
    assert gateway.violations == []
    assert gateway.injected == {"503": 3, "connect": 3, "lost": 1}
    assert stats.http_errors[503] == 3
    assert stats.connection_errors == {"ConnectError": 3, "ReadError": 1}
    assert stats.retries >= 7
    # it kept going after the last fault, and every trade sent was recorded exactly once
    assert len(gateway.trades) - gateway.trades_at_last_fault > 20
    assert stats.trades_sent == len(gateway.trades) > 100
    assert stats.trades_failed == 0 and stats.trades_replayed >= 1
    assert stats.signals_sent == len(gateway.signals) > 5
    # markets come before their trades and signals, trades stop before the close, and each market settles
    seen: dict[str, list[str]] = defaultdict(list)
    for kind, market_id in gateway.events:
        if kind != "create":
            assert seen[market_id][:1] == ["create"], f"{kind} on {market_id} before it was created"
        if kind in ("trade", "signal"):
            assert "close" not in seen[market_id]
        seen[market_id].append(kind)
    settled = [m for m in gateway.markets.values() if m["status"] in ("resolved", "cancelled")]
    assert len(settled) >= 4 and stats.markets_resolved + stats.markets_cancelled == len(settled)
    assert stats.markets_created == len(gateway.markets) >= 8
    assert sum(m["status"] == "open" for m in gateway.markets.values()) >= 4
    assert all(0.0 <= t["price"] <= 1.0 and t["market_id"] in gateway.markets for t in gateway.trades.values())
    assert all(m.startswith("sim-1-") for m in gateway.markets)
    assert "trades" in stats.summary()


async def test_runner_without_batches_stops_after_max_trades_and_settles() -> None:
    gateway = FakeGateway({("trades", 2): "503", ("trades", 4): "lost"})
    stats = await simulate(
        "http://gateway.test",
        rate=500.0,
        markets=3,
        seed=2,
        max_trades=60,
        market_lifetime_s=60.0,
        batch=False,
        settle_on_exit=True,
        transport=gateway.transport(),
        **FAST,
    )
    assert gateway.violations == []
    assert stats.trades_sent == len(gateway.trades) == 60
    assert stats.trades_replayed == 1
    assert gateway.calls["/api/v1/trades/batch"] == 0
    assert {m["status"] for m in gateway.markets.values()} <= {"resolved", "cancelled"}
    assert stats.markets_closed == 3


async def test_runner_refuses_to_reuse_existing_market_ids() -> None:
    gateway = FakeGateway(conflict_on_create=True)
    with pytest.raises(SimulationError, match="already exists"):
        await simulate(
            "http://gateway.test",
            rate=10.0,
            markets=2,
            seed=3,
            duration_s=5.0,
            transport=gateway.transport(),
            **FAST,
        )


async def test_runner_gives_up_when_the_gateway_never_answers() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SimulationError, match="did not answer"):
        await simulate(
            "http://gateway.test",
            rate=10.0,
            markets=2,
            seed=4,
            duration_s=5.0,
            transport=httpx.MockTransport(refuse),
            **{**FAST, "retry_for_s": 0.05},
        )


async def test_runner_stops_on_cancellation() -> None:
    gateway = FakeGateway()
    task = asyncio.create_task(
        simulate("http://gateway.test", rate=50.0, markets=2, seed=5, transport=gateway.transport(), **FAST)
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gateway.trades and gateway.violations == []


async def test_om_simulate_arguments(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="om simulate")
    add_arguments(parser)
    args = parser.parse_args("--api http://127.0.0.1:8000 --rate 20 --markets 8 --seed 1 --duration 60".split())
    assert (args.api, args.rate, args.markets, args.seed, args.duration) == (
        "http://127.0.0.1:8000",
        20.0,
        8,
        1,
        60.0,
    )
    assert args.batch and args.event_time and args.max_trades is None and args.market_lifetime == 300.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--rate", "-1"])
    capsys.readouterr()

    gateway = FakeGateway()
    real = simulate

    async def with_fake_transport(*a: Any, **kw: Any) -> Any:
        return await real(*a, transport=gateway.transport(), **kw)

    monkeypatch.setattr(runner_module, "simulate", with_fake_transport)
    args = parser.parse_args(["--rate", "200", "--markets", "2", "--max-trades", "25", "--seed", "6"])
    assert await run_from_args(args) == 0
    assert len(gateway.trades) == 25 and gateway.violations == []
    assert "trades 25" in capsys.readouterr().out
