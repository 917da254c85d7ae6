"""Simulated traders: who they are and how they decide. Pure: every random draw uses the `rng` passed in.

Two kinds of trader share one LMSR market maker per market:

* **informed** traders see a noisy estimate of the market's hidden true probability
  (``sigmoid(logit(truth) + N(0, noise_sd))``, each trader with their own ``noise_sd``) and buy
  the side the market underprices, sizing the stake by a fractional Kelly bet on their edge and
  never pushing the price past their own estimate. Holding the side they now think is
  overpriced, they sometimes sell it instead. Without enough edge they stay out.
* **noise** traders buy a random side with a log-normally distributed amount, and sometimes sell
  part of a position they hold.

Every trade keeps the YES price inside [`PRICE_FLOOR`, `PRICE_CEIL`] so markets never pin at 0 or 1.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from om_cli.simulator.lmsr import LMSR, Outcome, logit, sigmoid

Side = Literal["BUY", "SELL"]
TraderKind = Literal["informed", "noise"]

PRICE_FLOOR = 0.01
PRICE_CEIL = 0.99
MIN_AMOUNT = 0.05
MIN_SHARES = 1e-4


def other(outcome: Outcome) -> Outcome:
    return "NO" if outcome == "YES" else "YES"


@dataclass(frozen=True)
class Order:
    """What a trader does, already priced by the maker (not yet applied to it)."""

    outcome: Outcome
    side: Side
    amount: float  # currency spent (BUY) or received (SELL)
    shares: float


@dataclass
class Trader:
    user_id: str
    kind: TraderKind
    activity: float  # relative trading frequency (Zipf weight)
    noise_sd: float = 1.0  # informed traders: sd of their estimate's error in log-odds
    bankroll: float = 500.0  # currency a full Kelly bet is a fraction of
    holdings: dict[str, dict[str, float]] = field(default_factory=dict)  # market -> outcome -> shares

    def position(self, market_id: str, outcome: Outcome) -> float:
        return self.holdings.get(market_id, {}).get(outcome, 0.0)

    def record(self, market_id: str, order: Order) -> None:
        book = self.holdings.setdefault(market_id, {})
        delta = order.shares if order.side == "BUY" else -order.shares
        held = book.get(order.outcome, 0.0) + delta
        if held > 1e-9:
            book[order.outcome] = held
        else:
            book.pop(order.outcome, None)
        if not book:
            self.holdings.pop(market_id, None)

    def forget(self, market_id: str) -> None:
        """Drop a settled market's position."""
        self.holdings.pop(market_id, None)


def _price_limit_shares(lmsr: LMSR, outcome: Outcome) -> float:
    """The most shares of `outcome` one can buy without its price passing PRICE_CEIL."""
    return max(0.0, lmsr.shares_to_price(outcome, PRICE_CEIL))


def _buy(lmsr: LMSR, outcome: Outcome, amount: float, max_shares: float) -> Order | None:
    """Price a buy of about `amount`, capped at `max_shares`; amounts are whole cents."""
    if max_shares <= MIN_SHARES:
        return None
    amount = min(amount, lmsr.cost_to_buy(outcome, max_shares))
    amount = math.floor(amount * 100.0) / 100.0
    if amount < MIN_AMOUNT:
        return None
    shares = lmsr.shares_for_amount(outcome, amount)
    if shares <= MIN_SHARES:
        return None
    return Order(outcome=outcome, side="BUY", amount=amount, shares=shares)


def _sell(lmsr: LMSR, outcome: Outcome, shares: float) -> Order | None:
    """Price a sale of `shares` (rounded down to 1e-4), keeping the price of `outcome` >= PRICE_FLOOR."""
    floor_limit = -lmsr.shares_to_price(outcome, PRICE_FLOOR)
    shares = math.floor(min(shares, floor_limit) * 1e4) / 1e4
    if shares <= MIN_SHARES:
        return None
    proceeds = lmsr.proceeds_from_sell(outcome, shares)
    if proceeds < MIN_AMOUNT / 10:
        return None
    return Order(outcome=outcome, side="SELL", amount=proceeds, shares=shares)


@dataclass(frozen=True)
class InformedStrategy:
    min_edge: float = 0.02  # ignore mispricings smaller than this
    kelly_fraction: float = 0.5  # bet this fraction of the Kelly stake
    max_amount: float = 40.0  # caps one informed trade's price impact (p99 step <= 0.10 with the default b)
    sell_probability: float = 0.4  # chance to sell an overpriced holding rather than buy the other side

    def estimate(self, rng: random.Random, trader: Trader, truth: float) -> float:
        """The trader's noisy view of the truth."""
        t = min(max(truth, 1e-6), 1 - 1e-6)
        return sigmoid(logit(t) + rng.gauss(0.0, trader.noise_sd))

    def decide(self, rng: random.Random, trader: Trader, market_id: str, lmsr: LMSR, truth: float) -> Order | None:
        belief_yes = self.estimate(rng, trader, truth)
        p_yes = lmsr.price("YES")
        edge = belief_yes - p_yes
        if abs(edge) < self.min_edge:
            return None
        cheap: Outcome = "YES" if edge > 0 else "NO"
        dear = other(cheap)
        belief = belief_yes if cheap == "YES" else 1.0 - belief_yes  # the trader's probability of `cheap`
        target = min(belief, PRICE_CEIL)
        held_dear = trader.position(market_id, dear)
        if held_dear > 0 and rng.random() < self.sell_probability:
            # selling the overpriced side down to the belief: its price target is 1 - belief
            limit = -lmsr.shares_to_price(dear, max(1.0 - belief, PRICE_FLOOR))
            return _sell(lmsr, dear, min(held_dear, limit) * rng.uniform(0.5, 1.0))
        price = lmsr.price(cheap)
        kelly = (belief - price) / (1.0 - price)  # Kelly fraction for a binary contract bought at `price`
        stake = self.kelly_fraction * kelly * trader.bankroll * rng.uniform(0.5, 1.5)
        max_shares = max(0.0, lmsr.shares_to_price(cheap, target))
        return _buy(lmsr, cheap, min(stake, self.max_amount), max_shares)


@dataclass(frozen=True)
class NoiseStrategy:
    """Uninformed traders. Their side is drawn so that, with `longshot_bias = 0`, a buy's expected price move is
    zero (the YES probability is chosen to balance the up and down moves of the same amount): noise alone moves
    the price like a martingale, never towards 0.5 or away from it. `longshot_bias` then tilts the draw towards
    the cheaper side (the favourite-longshot bias of real betting markets: longshots end up overpriced)."""

    median_amount: float = 10.0
    amount_sigma: float = 0.9
    max_amount: float = 150.0
    sell_probability: float = 0.25
    longshot_bias: float = 0.05  # added to the chance of buying the side priced below 0.5

    def decide(self, rng: random.Random, trader: Trader, market_id: str, lmsr: LMSR, truth: float) -> Order | None:
        del truth  # noise traders know nothing
        outcomes: tuple[Outcome, ...] = ("YES", "NO")
        held = [(o, trader.position(market_id, o)) for o in outcomes]
        held = [(o, s) for o, s in held if s > 0]
        if held and rng.random() < self.sell_probability:
            sold, shares = rng.choice(held)
            order = _sell(lmsr, sold, shares * rng.uniform(0.2, 1.0))
            if order is not None:
                return order
        amount = min(rng.lognormvariate(math.log(self.median_amount), self.amount_sigma), self.max_amount)
        outcome: Outcome = "YES" if rng.random() < self.chance_of_yes(lmsr, amount) else "NO"
        order = _buy(lmsr, outcome, amount, _price_limit_shares(lmsr, outcome))
        if order is None:  # that side is pinned at the ceiling: take the other one
            outcome = other(outcome)
            order = _buy(lmsr, outcome, amount, _price_limit_shares(lmsr, outcome))
        return order

    def chance_of_yes(self, lmsr: LMSR, amount: float) -> float:
        """P(buy YES): zero expected price move, then tilted towards the longshot."""
        p = lmsr.price("YES")
        up = sigmoid(logit(p) + lmsr.shares_for_amount("YES", amount) / lmsr.b) - p
        down = p - sigmoid(logit(p) - lmsr.shares_for_amount("NO", amount) / lmsr.b)
        fair = down / (up + down) if up + down > 0 else 0.5
        tilt = self.longshot_bias if p < 0.5 else -self.longshot_bias if p > 0.5 else 0.0
        return min(max(fair + tilt, 0.0), 1.0)


def zipf_weights(n: int, s: float) -> list[float]:
    """Activity of ranks 1..n: 1 / rank**s."""
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def make_population(
    rng: random.Random,
    users: int,
    *,
    informed_fraction: float = 0.3,
    zipf_s: float = 1.1,
    noise_sd_range: tuple[float, float] = (0.3, 1.2),
    median_bankroll: float = 500.0,
) -> list[Trader]:
    """Users "user-1".."user-<users>", user-1 the most active (Zipf rank = number)."""
    if users < 1:
        raise ValueError("need at least one user")
    traders = []
    for n, weight in enumerate(zipf_weights(users, zipf_s), start=1):
        kind: TraderKind = "informed" if rng.random() < informed_fraction else "noise"
        traders.append(
            Trader(
                user_id=f"user-{n}",
                kind=kind,
                activity=weight,
                noise_sd=rng.uniform(*noise_sd_range),
                bankroll=rng.lognormvariate(math.log(median_bankroll), 0.7),
            )
        )
    return traders
