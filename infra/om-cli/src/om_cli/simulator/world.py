"""The simulated world: markets with hidden truths, traders, signals and the markets' life cycle.

Pure and deterministic: the world never reads a clock or does I/O. The caller passes the current
time (`now`, an aware datetime) to each step, and every random draw comes from generators seeded
with the world's seed, so the same seed and the same sequence of calls give the same markets,
trades, signals and resolutions. Three independent streams (markets, trades, signals) mean a
market's hidden truth and fate do not depend on how many trades happened before it was created.

Life cycle of a market (all times from its creation, ``lifetime`` jittered per market):

* created with ``close_at = now + lifetime``, a hidden prior ``truth`` ~ Beta(alpha, beta), an LMSR maker
  of liquidity ``b`` (log-uniform multiples of the noise traders' median trade, so one ordinary trade moves
  the price by about half a cent) starting at a partly informed opening price, and a fate drawn
  up front: cancelled (``p_cancel``), resolved MKT at the truth (``p_mkt``), else YES with
  probability ``truth`` and NO otherwise;
* late information: while it trades, the world learns about the fate. The informed probability is the
  Bayesian posterior of a Gaussian signal whose information accumulates as ``information * f**late_exponent``
  (``f`` the fraction of trading life gone): log-odds ``logit(truth) + (2Y - 1) I tau / 2 + sqrt(I) B(tau)``
  with ``B`` a Brownian motion. It is a martingale (calibrated at every moment) that sharpens mostly near
  the end. Informed traders and signals see this posterior, not the prior;
* tradeable until ``close_at - close_margin`` (the margin keeps in-flight trades before close_at);
  at that point a replacement market is created, so there are always ``markets`` open ones;
* closed at ``close_at``, then resolved (or cancelled) ``resolve_delay`` later.

Actions come out as small dataclasses whose ``request()`` gives the gateway path and JSON body.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from om_cli.simulator.agents import (
    PRICE_CEIL,
    PRICE_FLOOR,
    InformedStrategy,
    NoiseStrategy,
    Trader,
    make_population,
)
from om_cli.simulator.lmsr import LMSR, Outcome, logit, sigmoid

API = "/api/v1"
_RUN_ID = re.compile(r"[A-Za-z0-9_]{1,24}")

Fate = Literal["YES", "NO", "MKT", "CANCEL"]
MarketState = Literal["open", "winding", "closed", "settled"]

TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "politics": (
        (
            "Senator Alvarez",
            "Governor Chen",
            "Mayor Okafor",
            "the Coalition party",
            "Prime Minister Lindqvist",
        ),
        (
            "win the leadership vote",
            "sign the transit funding bill",
            "lead the weekly poll",
            "announce a reelection bid",
            "survive the confidence vote",
        ),
    ),
    "crypto": (
        ("Bitcoin", "Ether", "Solana", "the OMX token"),
        (
            "trade above its opening price",
            "gain 2% on the day",
            "hit a new weekly high",
            "get a spot ETF approved",
        ),
    ),
    "sports": (
        ("the Harbor City Hawks", "FC Northbridge", "the Valley Comets", "Team Aurora"),
        ("win tonight's match", "score first", "keep a clean sheet", "sign a new striker"),
    ),
    "tech": (
        ("Acme Robotics", "Nimbus Cloud", "Quanta Labs", "Pixelworks"),
        ("ship its new model", "announce layoffs", "beat earnings estimates", "open-source its compiler"),
    ),
    "economics": (
        ("the central bank", "the treasury", "the statistics office"),
        (
            "cut interest rates",
            "report inflation below 3%",
            "report GDP growth above 2%",
            "revise its forecast up",
        ),
    ),
    "science": (
        ("the Artemis probe", "the Kessler fusion lab", "the Helix vaccine trial", "the deep-sea survey"),
        ("report a breakthrough", "publish its results", "hit its next milestone", "be delayed"),
    ),
    "entertainment": (
        ("the film 'Paper Moons'", "singer Mara Vey", "the series 'Driftwood'", "the band Lowlight"),
        ("top the box office", "win best picture", "announce a world tour", "get renewed"),
    ),
}

NEWS_OUTLETS = ("newswire:daily-ledger", "newswire:the-courier", "press:metro-observer", "press:signal-post")
SOCIAL_SITES = ("social:chirp", "social:forum", "social:clips")
HANDLES = ("oracle_ann", "degen42", "quietquant", "marketmaven", "skeptic_sam", "hodlhannah", "pollwatcher")

# (upper bound of sentiment, phrases); a signal uses the first bucket its sentiment is below.
NEWS_LEADS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (-0.6, ("Insiders say it is very unlikely that", "Sources deny reports that")),
    (-0.2, ("Doubts grow over whether", "Analysts are skeptical that")),
    (0.2, ("It remains unclear whether", "Mixed signals on whether")),
    (0.6, ("Analysts increasingly expect that", "New reporting suggests that")),
    (2.0, ("Sources confirm that", "It is all but certain that")),
)
SOCIAL_LEADS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (-0.6, ("zero chance", "lol no way")),
    (-0.2, ("really doubt", "not convinced")),
    (0.2, ("no idea if", "coin flip whether")),
    (0.6, ("pretty sure", "feels like")),
    (2.0, ("calling it now:", "no doubt")),
)
CANCEL_REASONS = (
    "question became ambiguous",
    "underlying event was called off",
    "duplicate market",
    "resolution source unavailable",
)


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("the world works in aware datetimes")
    return t.isoformat()


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


@dataclass(frozen=True)
class WorldConfig:
    markets: int = 8  # markets open for trading at any time
    market_lifetime_s: float = 300.0
    lifetime_jitter: float = 0.2  # lifetime drawn uniformly within +-20%
    close_margin_s: float | None = None  # stop trading this long before close_at; None: min(2 s, 10%)
    resolve_delay_s: float | None = None  # resolve this long after close; None: min(5 s, 10%)
    users: int = 500
    zipf_s: float = 1.1
    informed_fraction: float = 0.35
    truth_alpha: float = 0.35  # prior truth ~ Beta(alpha, beta): U-shaped, as real questions mostly are
    truth_beta: float = 0.35
    # LMSR b as a multiple of the noise traders' median trade, log-uniform: one median trade at 0.5 moves the
    # price by about 1 / (4 * multiple).
    liquidity_trades: tuple[float, float] = (30.0, 120.0)
    information: float = 10.0  # total log-odds information revealed over a market's trading life (I)
    late_exponent: float = 2.0  # information revealed by fraction f of the life: I * f**late_exponent
    opening_shrink: float = 0.8  # the creator's opening price: sigmoid(shrink * logit(truth) + N(0, noise_sd))
    opening_noise_sd: float = 0.4
    p_cancel: float = 0.03
    p_mkt: float = 0.03
    news_fraction: float = 0.3  # of signals
    news_strength: float = 0.9  # sentiment = strength * (2 truth - 1) + N(0, noise_sd)
    news_noise_sd: float = 0.25
    social_strength: float = 0.5
    social_noise_sd: float = 0.55
    null_sentiment_probability: float = 0.05  # social posts without a sentiment score
    informed: InformedStrategy = field(default_factory=InformedStrategy)
    noise: NoiseStrategy = field(default_factory=NoiseStrategy)

    @classmethod
    def without_edge(cls, **overrides: Any) -> WorldConfig:
        """Every source of edge off: no informed traders, no longshot bias, no late information, uninformative
        signals, an opening price equal to the prior. The price is then the best forecast there is."""
        base: dict[str, Any] = {
            "informed_fraction": 0.0,
            "information": 0.0,
            "news_strength": 0.0,
            "social_strength": 0.0,
            "opening_shrink": 1.0,
            "opening_noise_sd": 0.0,
            "noise": NoiseStrategy(longshot_bias=0.0),
        }
        return cls(**{**base, **overrides})

    def __post_init__(self) -> None:
        if self.markets < 1:
            raise ValueError("markets must be >= 1")
        if self.market_lifetime_s <= 0:
            raise ValueError("market_lifetime_s must be > 0")
        if not 0 <= self.lifetime_jitter < 1:
            raise ValueError("lifetime_jitter must be in [0, 1)")
        if self.p_cancel < 0 or self.p_mkt < 0 or self.p_cancel + self.p_mkt > 1:
            raise ValueError("p_cancel and p_mkt must be >= 0 and sum to <= 1")


# ---- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateMarket:
    market_id: str
    question: str
    category: str
    close_at: datetime
    initial_price: float

    def request(self) -> tuple[str, dict[str, Any] | None]:
        return f"{API}/markets", {
            "market_id": self.market_id,
            "question": self.question,
            "category": self.category,
            "close_at": _iso(self.close_at),
            "initial_price": self.initial_price,
        }


@dataclass(frozen=True)
class CloseMarket:
    market_id: str

    def request(self) -> tuple[str, dict[str, Any] | None]:
        return f"{API}/markets/{self.market_id}/close", None


@dataclass(frozen=True)
class ResolveMarket:
    market_id: str
    resolution: Literal["YES", "NO", "MKT"]
    resolution_price: float | None = None  # only for MKT

    def request(self) -> tuple[str, dict[str, Any] | None]:
        body: dict[str, Any] = {"resolution": self.resolution}
        if self.resolution == "MKT":
            body["resolution_price"] = self.resolution_price
        return f"{API}/markets/{self.market_id}/resolve", body


@dataclass(frozen=True)
class CancelMarket:
    market_id: str
    reason: str

    def request(self) -> tuple[str, dict[str, Any] | None]:
        return f"{API}/markets/{self.market_id}/cancel", {"reason": self.reason}


LifecycleAction = CreateMarket | CloseMarket | ResolveMarket | CancelMarket


@dataclass(frozen=True)
class Trade:
    trade_id: str
    market_id: str
    user_id: str
    outcome: Outcome
    side: Literal["BUY", "SELL"]
    amount: float
    shares: float
    price: float  # YES price after the trade
    price_before: float
    executed_at: datetime

    def body(self, *, event_time: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "trade_id": self.trade_id,
            "market_id": self.market_id,
            "user_id": self.user_id,
            "outcome": self.outcome,
            "side": self.side,
            "amount": self.amount,
            "shares": self.shares,
            "price": self.price,
        }
        if event_time:
            body["executed_at"] = _iso(self.executed_at)
        return body

    def request(self, *, event_time: bool = True) -> tuple[str, dict[str, Any] | None]:
        return f"{API}/trades", self.body(event_time=event_time)


@dataclass(frozen=True)
class Signal:
    signal_id: str
    market_id: str
    kind: Literal["social", "news"]
    source: str
    text: str
    sentiment: float | None
    observed_at: datetime

    def request(self, *, event_time: bool = True) -> tuple[str, dict[str, Any] | None]:
        body: dict[str, Any] = {
            "signal_id": self.signal_id,
            "market_id": self.market_id,
            "kind": self.kind,
            "source": self.source,
            "text": self.text,
            "sentiment": self.sentiment,
        }
        if event_time:
            body["observed_at"] = _iso(self.observed_at)
        return f"{API}/signals", body


# ---- markets ----------------------------------------------------------------------------------


@dataclass
class SimMarket:
    market_id: str
    question: str
    category: str
    subject: str
    event: str
    created_at: datetime
    close_at: datetime
    trade_until: datetime
    settle_at: datetime
    initial_price: float
    truth: float  # hidden probability of YES
    fate: Fate
    lmsr: LMSR
    popularity: float
    state: MarketState = "open"
    trades: int = 0
    holders: set[str] = field(default_factory=set)
    belief: float = 0.5  # the informed probability of YES now (late information); starts at the truth
    _tau: float = 0.0  # information time revealed so far, in [0, 1]
    _brownian: float = 0.0
    _info_rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.belief = self.truth
        self._info_rng = random.Random(f"{self.market_id}:information")  # nosec B311  # seeded simulation; no secret

    def reveal(self, now: datetime, information: float, exponent: float) -> float:
        """Advance late information to `now`; returns the informed probability of YES."""
        if information <= 0:
            return self.belief
        life = (self.trade_until - self.created_at).total_seconds()
        f = _clamp((now - self.created_at).total_seconds() / life, 0.0, 1.0) if life > 0 else 1.0
        tau = f**exponent
        if tau <= self._tau:
            return self.belief
        self._brownian += self._info_rng.gauss(0.0, math.sqrt(tau - self._tau))
        self._tau = tau
        y = {"YES": 1.0, "NO": 0.0}.get(self.fate, self.truth)
        llr = (2.0 * y - 1.0) * information * tau / 2.0 + math.sqrt(information) * self._brownian
        self.belief = _clamp(sigmoid(logit(self.truth) + llr), 1e-6, 1 - 1e-6)
        return self.belief

    @property
    def price(self) -> float:
        return self.lmsr.price("YES")

    def create_action(self) -> CreateMarket:
        return CreateMarket(self.market_id, self.question, self.category, self.close_at, self.initial_price)

    def settle_action(self) -> ResolveMarket | CancelMarket:
        if self.fate == "CANCEL":
            # the reason is a pure function of the id, so it draws nothing from any stream
            return CancelMarket(self.market_id, CANCEL_REASONS[sum(map(ord, self.market_id)) % len(CANCEL_REASONS)])
        if self.fate == "MKT":
            return ResolveMarket(self.market_id, "MKT", round(_clamp(self.truth, 0.0, 1.0), 4))
        return ResolveMarket(self.market_id, self.fate)


def draw_market(rng: random.Random, config: WorldConfig, market_id: str, now: datetime) -> SimMarket:
    """One new market created at `now`: its question, hidden truth, maker and fate."""
    category = rng.choice(sorted(TOPICS))
    subjects, events = TOPICS[category]
    subject, event = rng.choice(subjects), rng.choice(events)
    lifetime = config.market_lifetime_s * rng.uniform(1 - config.lifetime_jitter, 1 + config.lifetime_jitter)
    close_at = now + timedelta(seconds=lifetime)
    margin = config.close_margin_s if config.close_margin_s is not None else min(2.0, 0.1 * lifetime)
    margin = min(margin, 0.5 * lifetime)
    delay = config.resolve_delay_s if config.resolve_delay_s is not None else min(5.0, 0.1 * lifetime)
    truth = _clamp(rng.betavariate(config.truth_alpha, config.truth_beta), 1e-4, 1 - 1e-4)
    # the creator's guess: shrunk toward 0.5 and noisy, in whole cents
    opening = sigmoid(config.opening_shrink * logit(truth) + rng.gauss(0.0, 1.0) * config.opening_noise_sd)
    initial = round(_clamp(opening, 0.05, 0.95), 2)
    lo, hi = config.liquidity_trades
    b = config.noise.median_amount * math.exp(rng.uniform(math.log(lo), math.log(hi)))
    u = rng.random()
    if u < config.p_cancel:
        fate: Fate = "CANCEL"
    elif u < config.p_cancel + config.p_mkt:
        fate = "MKT"
    else:
        fate = "YES" if rng.random() < truth else "NO"
    question = f"Will {subject} {event} by {close_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC?"
    return SimMarket(
        market_id=market_id,
        question=question,
        category=category,
        subject=subject,
        event=event,
        created_at=now,
        close_at=close_at,
        trade_until=close_at - timedelta(seconds=margin),
        settle_at=close_at + timedelta(seconds=delay),
        initial_price=initial,
        truth=truth,
        fate=fate,
        lmsr=LMSR.with_price(b, initial),
        popularity=rng.lognormvariate(0.0, 0.8),
    )


def draw_sentiment(rng: random.Random, config: WorldConfig, kind: str, truth: float) -> float | None:
    """Sentiment in [-1, 1] correlated with the truth; news is more informative than social."""
    if kind == "social" and rng.random() < config.null_sentiment_probability:
        return None
    strength, sd = (
        (config.news_strength, config.news_noise_sd)
        if kind == "news"
        else (config.social_strength, config.social_noise_sd)
    )
    return round(_clamp(strength * (2.0 * truth - 1.0) + rng.gauss(0.0, sd), -1.0, 1.0), 3)


def _lead(rng: random.Random, leads: tuple[tuple[float, tuple[str, ...]], ...], sentiment: float) -> str:
    for bound, phrases in leads:
        if sentiment < bound:
            return rng.choice(phrases)
    return rng.choice(leads[-1][1])


class World:
    """Markets, traders and signals, advanced by the caller with explicit times."""

    def __init__(self, seed: int, config: WorldConfig | None = None, *, run_id: str | None = None) -> None:
        if run_id is not None and not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"run_id must match {_RUN_ID.pattern}, got {run_id!r}")
        self.seed = seed
        self.config = config or WorldConfig()
        self.prefix = f"sim-{seed}" if not run_id else f"sim-{seed}-{run_id}"
        # bandit: simulation randomness, seeded for reproducibility; not used for security
        self._market_rng = random.Random(f"{seed}:markets")  # nosec B311
        # bandit: simulation randomness, seeded for reproducibility; not used for security
        self._trade_rng = random.Random(f"{seed}:trades")  # nosec B311
        # bandit: simulation randomness, seeded for reproducibility; not used for security
        self._signal_rng = random.Random(f"{seed}:signals")  # nosec B311
        self.traders: list[Trader] = make_population(
            # bandit: simulation randomness, seeded for reproducibility; not used for security
            random.Random(f"{seed}:users"),  # nosec B311
            self.config.users,
            informed_fraction=self.config.informed_fraction,
            zipf_s=self.config.zipf_s,
        )
        self._by_user = {t.user_id: t for t in self.traders}
        self._cum_activity = []
        total = 0.0
        for t in self.traders:
            total += t.activity
            self._cum_activity.append(total)
        self.markets: dict[str, SimMarket] = {}  # not yet settled, in creation order
        self.markets_created = 0
        self.trades_made = 0
        self.signals_made = 0

    # ---- markets ------------------------------------------------------------------------------

    def open_markets(self, now: datetime | None = None) -> list[SimMarket]:
        """Markets accepting trades (at `now`, if given)."""
        return [m for m in self.markets.values() if m.state == "open" and (now is None or now < m.trade_until)]

    def _spawn(self, now: datetime) -> SimMarket:
        self.markets_created += 1
        market = draw_market(self._market_rng, self.config, f"{self.prefix}-{self.markets_created}", now)
        self.markets[market.market_id] = market
        return market

    def due_lifecycle(self, now: datetime, *, max_markets: int | None = None) -> list[LifecycleAction]:
        """Everything due at `now`, in the order to send it: new markets, closes, then settlements.

        The world assumes each action succeeds; `discard` takes back a market whose creation failed.
        With `max_markets`, no market is created once that many have been.
        """
        actions: list[LifecycleAction] = []
        for m in self.markets.values():
            if m.state == "open" and now >= m.trade_until:
                m.state = "winding"
        while len(self.open_markets()) < self.config.markets and (
            max_markets is None or self.markets_created < max_markets
        ):
            actions.append(self._spawn(now).create_action())
        for m in list(self.markets.values()):
            if m.state == "winding" and now >= m.close_at:
                m.state = "closed"
                actions.append(CloseMarket(m.market_id))
            if m.state == "closed" and now >= m.settle_at:
                actions.append(self._settle(m))
        return actions

    def _settle(self, m: SimMarket) -> ResolveMarket | CancelMarket:
        m.state = "settled"
        for user_id in m.holders:
            self._by_user[user_id].forget(m.market_id)
        del self.markets[m.market_id]
        return m.settle_action()

    def next_event_at(self) -> datetime | None:
        """When `due_lifecycle` will next have something to do."""
        times = []
        for m in self.markets.values():
            times.append(m.trade_until if m.state == "open" else m.close_at if m.state == "winding" else m.settle_at)
        return min(times, default=None)

    def discard(self, market_id: str) -> None:
        """Forget a market the platform refused to create; the next `due_lifecycle` replaces it."""
        m = self.markets.pop(market_id, None)
        if m is not None:
            for user_id in m.holders:
                self._by_user[user_id].forget(market_id)

    def settle_all(self) -> list[LifecycleAction]:
        """Close and settle every remaining market now, creating no replacements (for a clean exit)."""
        actions: list[LifecycleAction] = []
        for m in list(self.markets.values()):
            if m.state in ("open", "winding"):
                actions.append(CloseMarket(m.market_id))
            actions.append(self._settle(m))
        return actions

    # ---- trades and signals -------------------------------------------------------------------

    def _pick_market(self, rng: random.Random, markets: list[SimMarket]) -> SimMarket:
        return rng.choices(markets, weights=[m.popularity for m in markets], k=1)[0]

    def next_trade(self, now: datetime) -> Trade | None:
        """The next trade at `now` (applied to the world's maker), or None if no market is open."""
        markets = self.open_markets(now)
        if not markets:
            return None
        rng = self._trade_rng
        for _ in range(20):  # informed traders without an edge pass; someone else trades
            trader = rng.choices(self.traders, cum_weights=self._cum_activity, k=1)[0]
            market = self._pick_market(rng, markets)
            strategy = self.config.informed if trader.kind == "informed" else self.config.noise
            belief = market.reveal(now, self.config.information, self.config.late_exponent)
            order = strategy.decide(rng, trader, market.market_id, market.lmsr, belief)
            if order is None:
                continue
            before = market.price
            if order.side == "BUY":
                market.lmsr.buy(order.outcome, order.shares)
            else:
                market.lmsr.sell(order.outcome, order.shares)
            trader.record(market.market_id, order)
            market.holders.add(trader.user_id)
            market.trades += 1
            self.trades_made += 1
            return Trade(
                trade_id=f"{self.prefix}-t{self.trades_made}",
                market_id=market.market_id,
                user_id=trader.user_id,
                outcome=order.outcome,
                side=order.side,
                amount=order.amount,
                shares=order.shares,
                price=_clamp(market.price, 0.0, 1.0),
                price_before=before,
                executed_at=now,
            )
        return None

    def next_signal(self, now: datetime) -> Signal | None:
        """A social post or news item about an open market, or None if no market is open."""
        markets = self.open_markets(now)
        if not markets:
            return None
        rng = self._signal_rng
        market = self._pick_market(rng, markets)
        kind: Literal["social", "news"] = "news" if rng.random() < self.config.news_fraction else "social"
        belief = market.reveal(now, self.config.information, self.config.late_exponent)
        sentiment = draw_sentiment(rng, self.config, kind, belief)
        tone = sentiment if sentiment is not None else rng.uniform(-0.5, 0.5)
        if kind == "news":
            outlet = rng.choice(NEWS_OUTLETS)
            text = f"{_lead(rng, NEWS_LEADS, tone)} {market.subject} will {market.event}."
            source = outlet
        else:
            handle = rng.choice(HANDLES)
            text = f"{_lead(rng, SOCIAL_LEADS, tone)} {market.subject} will {market.event} #{market.category}"
            source = f"{rng.choice(SOCIAL_SITES)}/@{handle}"
        self.signals_made += 1
        return Signal(
            signal_id=f"{self.prefix}-s{self.signals_made}",
            market_id=market.market_id,
            kind=kind,
            source=source,
            text=text,
            sentiment=sentiment,
            observed_at=now,
        )


__all__ = [
    "API",
    "PRICE_CEIL",
    "PRICE_FLOOR",
    "CancelMarket",
    "CloseMarket",
    "CreateMarket",
    "LifecycleAction",
    "ResolveMarket",
    "Signal",
    "SimMarket",
    "Trade",
    "World",
    "WorldConfig",
    "draw_market",
    "draw_sentiment",
]
