"""Hanson's Logarithmic Market Scoring Rule (LMSR) market maker for a binary YES/NO market.

Pure arithmetic: no I/O, no randomness. The maker holds the outstanding share quantities
``q = (q_yes, q_no)`` and a liquidity parameter ``b > 0``. With ``x = (q_yes - q_no) / b``:

* cost function      ``C(q) = b * ln(exp(q_yes / b) + exp(q_no / b))``
* prices             ``p_yes = exp(q_yes / b) / (exp(q_yes / b) + exp(q_no / b)) = sigmoid(x)``,
                     ``p_no = 1 - p_yes = sigmoid(-x)``; both in (0, 1), summing to 1.
* trading ``d`` shares of outcome ``o`` (``d > 0`` buys, ``d < 0`` sells) costs
                     ``C(q + d e_o) - C(q) = b * ln(1 - p_o + p_o * exp(d / b))``
                     ``                    = b * log1p(p_o * expm1(d / b))``
  so a buy of ``d`` costs ``cost(o, d)`` and a sale of ``d`` pays ``-cost(o, -d)``. Because the
  cost is a difference of a state function, it is path independent: buying ``x`` then ``y``
  costs exactly what buying ``x + y`` at once does.
* shares bought with an amount ``m > 0`` (inverse of the buy cost, closed form)
                     ``d = b * ln(1 + (exp(m / b) - 1) / p_o) = b * log1p(expm1(m / b) / p_o)``
* shares to sell to receive ``m``
                     ``d = -b * log1p(expm1(-m / b) / p_o)``, defined only for
                     ``m < -b * ln(1 - p_o)`` (the proceeds of selling infinitely many shares).
* shares of ``o`` that move its price from ``p_o`` to ``t``: ``d = b * (logit(t) - logit(p_o))``.
* starting at YES price ``p0`` means ``q_yes - q_no = b * logit(p0)``; the maker's worst-case
  loss from there is ``b * ln(1 / min(p0, 1 - p0))`` (``b * ln 2`` from 0.5).

Only the difference ``q_yes - q_no`` matters for prices and costs; both quantities are kept so a
state reads like an order book's inventory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["YES", "NO"]
OUTCOMES: tuple[Outcome, Outcome] = ("YES", "NO")

# Above this value of d/b (or m/b) exp() is computed in log space to avoid overflow.
_EXP_SAFE = 30.0


def logit(p: float) -> float:
    """ln(p / (1 - p)) for p in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"logit needs a probability strictly between 0 and 1, got {p!r}")
    return math.log(p) - math.log1p(-p)


def sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def log_sigmoid(x: float) -> float:
    """ln(sigmoid(x)) = -ln(1 + exp(-x)), accurate for large |x|."""
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def _logaddexp(a: float, b: float) -> float:
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be 'YES' or 'NO', got {outcome!r}")


@dataclass
class LMSR:
    """An LMSR maker for one binary market. Queries are pure; only `buy`/`sell`/`spend` change state."""

    b: float
    q_yes: float = 0.0
    q_no: float = 0.0

    def __post_init__(self) -> None:
        if not (self.b > 0 and math.isfinite(self.b)):
            raise ValueError(f"liquidity b must be a positive finite number, got {self.b!r}")

    @classmethod
    def with_price(cls, b: float, initial_price: float) -> LMSR:
        """A maker whose YES price starts at `initial_price` (strictly between 0 and 1)."""
        return cls(b=b, q_yes=b * logit(initial_price), q_no=0.0)

    # ---- prices -------------------------------------------------------------------------------

    def _x(self, outcome: Outcome) -> float:
        """(q_o - q_other) / b: the log-odds of `outcome`."""
        _check_outcome(outcome)
        d = (self.q_yes - self.q_no) / self.b
        return d if outcome == "YES" else -d

    def price(self, outcome: Outcome = "YES") -> float:
        """The instantaneous price of `outcome`, i.e. its implied probability."""
        return sigmoid(self._x(outcome))

    def prices(self) -> tuple[float, float]:
        """(p_yes, p_no); they sum to 1."""
        p_yes = self.price("YES")
        return p_yes, 1.0 - p_yes

    def cost_function(self) -> float:
        """C(q) = b ln(e^{q_yes/b} + e^{q_no/b})."""
        return self.b * _logaddexp(self.q_yes / self.b, self.q_no / self.b)

    def worst_case_loss(self) -> float:
        """The most the maker can lose from the current state: b ln(1 / min(p_yes, p_no))."""
        x = self._x("YES")
        return -self.b * min(log_sigmoid(x), log_sigmoid(-x))

    # ---- costs --------------------------------------------------------------------------------

    def cost(self, outcome: Outcome, shares: float) -> float:
        """C(q + shares e_outcome) - C(q). Positive `shares` buys (cost > 0), negative sells (cost < 0)."""
        x = self._x(outcome)
        r = shares / self.b
        if r <= _EXP_SAFE:
            return self.b * math.log1p(sigmoid(x) * math.expm1(r))
        # ln(p e^r + 1 - p) computed in log space
        return self.b * _logaddexp(log_sigmoid(x) + r, log_sigmoid(-x))

    def cost_to_buy(self, outcome: Outcome, shares: float) -> float:
        """Currency needed to buy `shares` (>= 0) of `outcome`."""
        if shares < 0:
            raise ValueError("shares to buy must be >= 0")
        return self.cost(outcome, shares)

    def proceeds_from_sell(self, outcome: Outcome, shares: float) -> float:
        """Currency received for selling `shares` (>= 0) of `outcome` back to the maker."""
        if shares < 0:
            raise ValueError("shares to sell must be >= 0")
        return -self.cost(outcome, -shares)

    def max_proceeds(self, outcome: Outcome) -> float:
        """Supremum of what selling `outcome` can pay: -b ln(1 - p_o)."""
        return -self.b * log_sigmoid(-self._x(outcome))

    def shares_for_amount(self, outcome: Outcome, amount: float) -> float:
        """Shares of `outcome` that spending `amount` (>= 0) buys: the inverse of `cost_to_buy`."""
        if amount < 0:
            raise ValueError("amount must be >= 0")
        x = self._x(outcome)
        r = amount / self.b
        log_p = log_sigmoid(x)
        if r <= _EXP_SAFE and log_p > -600.0:
            return self.b * math.log1p(math.expm1(r) / math.exp(log_p))
        # d/b = ln(e^r - (1 - p)) - ln p = r + ln(1 - (1 - p) e^{-r}) - ln p, all terms positive inside
        p = math.exp(log_p)
        return self.b * (r + math.log(-math.expm1(-r) + p * math.exp(-r)) - log_p)

    def shares_for_proceeds(self, outcome: Outcome, amount: float) -> float:
        """Shares of `outcome` to sell to receive exactly `amount`: the inverse of `proceeds_from_sell`."""
        if amount < 0:
            raise ValueError("amount must be >= 0")
        if amount >= self.max_proceeds(outcome):
            raise ValueError(
                f"no sale of {outcome} pays {amount!r}; the most it can pay is {self.max_proceeds(outcome)!r}"
            )
        p = self.price(outcome)
        return -self.b * math.log1p(math.expm1(-amount / self.b) / p)

    def shares_to_price(self, outcome: Outcome, target: float) -> float:
        """Shares of `outcome` to trade so its price becomes `target` (negative means selling)."""
        return self.b * (logit(target) - self._x(outcome))

    # ---- state changes ------------------------------------------------------------------------

    def _add(self, outcome: Outcome, shares: float) -> None:
        if outcome == "YES":
            self.q_yes += shares
        else:
            self.q_no += shares

    def buy(self, outcome: Outcome, shares: float) -> float:
        """Buy `shares` of `outcome`; returns what they cost."""
        cost = self.cost_to_buy(outcome, shares)
        self._add(outcome, shares)
        return cost

    def sell(self, outcome: Outcome, shares: float) -> float:
        """Sell `shares` of `outcome` back to the maker; returns the proceeds."""
        proceeds = self.proceeds_from_sell(outcome, shares)
        self._add(outcome, -shares)
        return proceeds

    def spend(self, outcome: Outcome, amount: float) -> float:
        """Spend `amount` on `outcome`; returns the shares bought."""
        shares = self.shares_for_amount(outcome, amount)
        self._add(outcome, shares)
        return shares
