"""Per-market streaming features as pure, incremental, bounded state (no I/O). Definitions: docs/features.md.

Every piece of a market's state is a commutative fold keyed by event time — integer fixed-point sums, maxima by
(event time, event id), a top-N by event time, time buckets and a HyperLogLog — so events applied in any order
within the grace period give the same state, and the same events in the same order give identical vectors.
Times are epoch seconds (floats) inside; datetimes exist only at the edges.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from array import array
from dataclasses import dataclass
from typing import Any

from om_contracts import MarketFeatures

VOLUME_SCALE = 1_000_000  # total_volume is summed in integer millionths: exact and order-independent
SENTIMENT_SCALE = 1_000_000_000
MAX_AMOUNT = 1e12  # an amount above this is not a trade, it is a bug upstream


class BadEvent(ValueError):
    """The event cannot enter state (a non-finite or absurd number): dead-letter it with this reason."""


@dataclass(frozen=True)
class FeatureConfig:
    """Windows and limits. Every default is documented in docs/features.md."""

    grace_s: float = 300.0  # later than the market's newest event by more than this: totals only
    window_trades: int = 20  # volatility, momentum and liquidity look at the newest N trades by event time
    volume_bucket_s: int = 300  # volume_trend's buckets
    trend_recent_s: int = 3_600  # "last hour"
    trend_baseline_s: int = 6 * 3_600  # "the previous hours"
    sentiment_bucket_s: int = 3_600
    sentiment_window_s: int = 24 * 3_600
    exact_participants: int = 64  # distinct traders counted exactly up to this many, then by HyperLogLog
    hll_precision: int = 11  # 2**11 one-byte registers: 2 KiB, standard error 1.04 / sqrt(2048) = 2.3 %

    def __post_init__(self) -> None:
        if self.grace_s < 0 or self.window_trades < 2:
            raise ValueError("grace_s must be >= 0 and window_trades >= 2")
        if self.trend_recent_s % self.volume_bucket_s or self.trend_baseline_s % self.volume_bucket_s:
            raise ValueError("the trend windows must be whole numbers of volume buckets")
        if min(self.trend_recent_s + self.trend_baseline_s, self.sentiment_window_s) <= self.grace_s:
            raise ValueError("windows must be longer than the grace period, or late events could miss them")


DEFAULT = FeatureConfig()

#: The contract's features in its order; when `compute` returns them so, the vector's encoder formats them as one
#: template (om_feature.processor).
FEATURE_NAMES: tuple[str, ...] = tuple(MarketFeatures.model_fields)


def user_hash(user_id: str) -> int:
    """A stable 64-bit hash (Python's hash() changes per process; checkpoints outlive processes)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")


class Participants:
    """Distinct traders: an exact set of 64-bit hashes up to `exact` members, then a HyperLogLog.

    Both are functions of the set of traders only (not of order), so the count is order-independent. The
    HyperLogLog keeps the sum of 2**-register as an exact integer, so its estimate costs O(1)."""

    __slots__ = ("exact", "registers", "inverse_sum", "zeros", "precision")

    def __init__(self, precision: int) -> None:
        self.exact: set[int] | None = set()
        self.registers: bytearray | None = None
        self.inverse_sum = 0  # sum over registers of 2**(64 - register), an exact integer
        self.zeros = 0
        self.precision = precision

    def add(self, h: int, limit: int) -> None:
        exact = self.exact
        if exact is not None:
            exact.add(h)
            if len(exact) > limit:
                self.exact = None
                m = 1 << self.precision
                self.registers = bytearray(m)
                self.inverse_sum = m << 64
                self.zeros = m
                for member in exact:
                    self._add_hll(member)
            return
        self._add_hll(h)

    def _add_hll(self, h: int) -> None:
        p = self.precision
        index = h & ((1 << p) - 1)
        rest = h >> p
        rank = (64 - p) - rest.bit_length() + 1
        registers = self.registers
        old = registers[index]  # type: ignore[index]
        if rank > old:
            registers[index] = rank  # type: ignore[index]
            self.inverse_sum += (1 << (64 - rank)) - (1 << (64 - old))
            if old == 0:
                self.zeros -= 1

    def count(self) -> int:
        if self.exact is not None:
            return len(self.exact)
        m = 1 << self.precision
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / (self.inverse_sum / float(1 << 64))
        if estimate <= 2.5 * m and self.zeros:
            estimate = m * math.log(m / self.zeros)  # linear counting: accurate for small cardinalities
        return round(estimate)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Participants) and self.exact == other.exact and self.registers == other.registers

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.exact, self.registers, self.inverse_sum, self.zeros, self.precision)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.exact, self.registers, self.inverse_sum, self.zeros, self.precision = state


class MarketState:
    """One market's state. `held` keeps events that arrived before the market's creation (bounded by the
    engine). Processing bookkeeping (`last_event_id`, `pending`, ...) is excluded from `semantic()`."""

    __slots__ = (
        "market_id",
        "partition",
        "created",
        "category",
        "created_at",
        "close_at",
        "initial_price",
        "status",
        "closed_at",
        "resolved_at",
        "resolution",
        "resolution_price",
        "first_at",
        "watermark",
        "last_key",
        "current_price",
        "volume_units",
        "trade_count",
        "participants",
        "window",
        "prices",
        "volume_buckets",
        "social",
        "news",
        "trend_key",
        "trend_recent",
        "trend_baseline",
        "held",
        "last_event_id",
        "pending",
        "published_bucket",
        "snapshot_at",
    )

    def __init__(self, market_id: str, partition: int = 0, config: FeatureConfig = DEFAULT) -> None:
        self.market_id = market_id
        self.partition = partition
        self.created = False
        self.category = ""
        self.created_at: float | None = None
        self.close_at: float | None = None
        self.initial_price = 0.5
        self.status = "open"
        self.closed_at: float | None = None
        self.resolved_at: float | None = None
        self.resolution: str | None = None
        self.resolution_price: float | None = None
        self.first_at = math.inf  # earliest event time seen (volume_trend's history length)
        self.watermark = -math.inf  # newest event time seen
        self.last_key: tuple[float, str] | None = None  # (event time, event id) of the latest trade
        self.current_price: float | None = None
        self.volume_units = 0
        self.trade_count = 0
        self.participants = Participants(config.hll_precision)
        #: newest trades by event time, oldest first: (time, event id, price_before, price_after, amount)
        self.window: list[tuple[float, str, float, float, float]] = []
        #: the window's (price_before, price_after, amount), flat and contiguous: `compute` reads only these, and
        #: the tuples' scattered float objects cost it a cache miss each once hundreds of markets interleave.
        #: Derived from `window` (not checkpointed; rebuilt on load)
        self.prices = array("d")
        self.volume_buckets: dict[int, int] = {}  # bucket index -> volume in millionths
        self.social: dict[int, list[int]] = {}  # bucket index -> [sum in billionths, count]
        self.news: dict[int, list[int]] = {}
        # volume_trend's sums for one "now" bucket, kept up to date as trades arrive (None: recompute)
        self.trend_key: int | None = None
        self.trend_recent = 0
        self.trend_baseline = 0
        self.held: list[Any] = []
        self.last_event_id: str | None = None
        self.pending = False
        self.published_bucket = -1
        self.snapshot_at = -math.inf

    def semantic(self) -> tuple[Any, ...]:
        """Everything the features depend on; equal for any arrival order within the grace period."""
        return (
            self.market_id,
            self.created,
            self.category,
            self.created_at,
            self.close_at,
            self.initial_price,
            self.status,
            self.closed_at,
            self.resolved_at,
            self.resolution,
            self.resolution_price,
            self.first_at,
            self.watermark,
            self.last_key,
            self.current_price,
            self.volume_units,
            self.trade_count,
            self.participants.exact,
            bytes(self.participants.registers or b""),
            tuple(self.window),
            sorted(self.volume_buckets.items()),
            sorted((k, tuple(v)) for k, v in self.social.items()),
            sorted((k, tuple(v)) for k, v in self.news.items()),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name != "prices"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if name in _SLOTS:  # (checkpoints from before the dedupe ids moved to the engine carry them too)
                setattr(self, name, value)
        self.prices = _prices(self.window)

    @property
    def price(self) -> float:
        return self.current_price if self.current_price is not None else self.initial_price


_SLOTS = frozenset(MarketState.__slots__) - {"prices"}


def _prices(window: list[tuple[float, str, float, float, float]]) -> array[float]:
    return array("d", [x for _, _, before, after, amount in window for x in (before, after, amount)])


def id_key(event_id: str) -> int:
    """A compact int for an event id: the first 64 bits of a UUID (60 random bits of a uuid4; the same as
    `uuid.UUID(event_id).int >> 64`); ids that are not UUIDs (as offline history's record ids are) hash to 64 bits."""
    if len(event_id) == 36 and event_id[8] == "-" and event_id[13] == "-":
        try:
            return int(event_id[:8] + event_id[9:13] + event_id[14:18], 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def apply_trade(
    s: MarketState,
    config: FeatureConfig,
    *,
    event_id: str,
    at: float,
    user_id: str,
    amount: float,
    price_before: float,
    price_after: float,
) -> None:
    """Fold a trade into the state (deduping is the caller's: the engine's event ids). Raises BadEvent for numbers
    that cannot be."""
    if not (0.0 < amount <= MAX_AMOUNT) or not math.isfinite(amount):
        raise BadEvent(f"amount {amount!r} is not a finite positive number up to {MAX_AMOUNT:g}")
    if not (0.0 <= price_before <= 1.0 and 0.0 <= price_after <= 1.0):
        raise BadEvent("prices must be finite probabilities in [0, 1]")
    if not math.isfinite(at):
        raise BadEvent("occurred_at is not a finite time")
    in_grace = at >= s.watermark - config.grace_s
    if at < s.first_at:
        s.first_at = at
    if at > s.watermark:
        s.watermark = at
    units = round(amount * VOLUME_SCALE)
    s.volume_units += units
    s.trade_count += 1
    s.participants.add(user_hash(user_id), config.exact_participants)
    s.last_event_id = event_id
    if not in_grace:
        return  # far too late for any window: totals only (docs/features.md)
    key = (at, event_id)
    if s.last_key is None or key > s.last_key:
        s.last_key = key
        s.current_price = price_after
    window, prices = s.window, s.prices
    entry = (at, event_id, price_before, price_after, amount)
    if not window or key >= (window[-1][0], window[-1][1]):
        window.append(entry)
        prices.extend((price_before, price_after, amount))
    elif len(window) >= config.window_trades and key < (window[0][0], window[0][1]):
        pass  # older than every trade in a full window: it would be evicted at once
    else:
        at_index = bisect.bisect_right(window, entry)  # where bisect.insort puts it
        window.insert(at_index, entry)
        prices[3 * at_index : 3 * at_index] = array("d", (price_before, price_after, amount))
    if len(window) > config.window_trades:
        del window[0]
        del prices[:3]
    bucket = int(at // config.volume_bucket_s)
    buckets = s.volume_buckets
    buckets[bucket] = buckets.get(bucket, 0) + units
    if s.trend_key is not None:
        recent_from = s.trend_key - config.trend_recent_s // config.volume_bucket_s + 1
        if recent_from <= bucket <= s.trend_key:
            s.trend_recent += units
        elif recent_from - config.trend_baseline_s // config.volume_bucket_s <= bucket < recent_from:
            s.trend_baseline += units
    horizon = int(s.watermark // config.volume_bucket_s) - (config.trend_recent_s + config.trend_baseline_s) // (
        config.volume_bucket_s
    )
    if len(buckets) > 1 and min(buckets) < horizon:
        for old in [b for b in buckets if b < horizon]:
            del buckets[old]


def apply_signal(
    s: MarketState, config: FeatureConfig, *, event_id: str, at: float, kind: str, sentiment: float
) -> None:
    if not (-1.0 <= sentiment <= 1.0):
        raise BadEvent(f"sentiment {sentiment!r} is not a finite number in [-1, 1]")
    if not math.isfinite(at):
        raise BadEvent("occurred_at is not a finite time")
    in_grace = at >= s.watermark - config.grace_s
    if at < s.first_at:
        s.first_at = at
    if at > s.watermark:
        s.watermark = at
    s.last_event_id = event_id
    if not in_grace:
        return  # sentiment is windowed only: a far-too-late signal changes nothing but the bookkeeping
    buckets = s.social if kind == "social" else s.news
    bucket = int(at // config.sentiment_bucket_s)
    slot = buckets.get(bucket)
    if slot is None:
        slot = buckets[bucket] = [0, 0]
    slot[0] += round(sentiment * SENTIMENT_SCALE)
    slot[1] += 1
    horizon = int(s.watermark // config.sentiment_bucket_s) - config.sentiment_window_s // config.sentiment_bucket_s
    for table in (s.social, s.news):
        if table and min(table) < horizon:
            for old in [b for b in table if b < horizon]:
                del table[old]


def apply_created(
    s: MarketState, *, event_id: str, at: float, category: str, close_at: float, initial_price: float
) -> None:
    s.created = True
    s.category = category
    s.created_at = at
    s.close_at = close_at
    s.initial_price = initial_price
    if at < s.first_at:
        s.first_at = at
    if at > s.watermark:
        s.watermark = at
    s.last_event_id = event_id


def apply_status(
    s: MarketState, *, event_id: str, at: float, status: str, resolution: str | None = None, price: float | None = None
) -> None:
    """closed / resolved / cancelled. A market moves forward only (a late `closed` after `resolved` keeps
    `resolved`), so the final status does not depend on arrival order."""
    rank = {"open": 0, "closed": 1, "resolved": 2, "cancelled": 2}
    if status == "closed":
        s.closed_at = at if s.closed_at is None else min(s.closed_at, at)
    elif status == "resolved":
        s.resolved_at, s.resolution, s.resolution_price = at, resolution, price
    if rank[status] >= rank[s.status]:
        s.status = status
    if at > s.watermark:
        s.watermark = at
    s.last_event_id = event_id


# --- category history: resolutions seen before t -------------------------------------------------------


class CategoryHistory:
    """Resolved markets of one category as cumulative sums by resolution time, so the statistics as of any
    time t (resolutions strictly before t) cost one bisect. Grows with resolved markets, never with trades."""

    __slots__ = ("times", "keys", "cum_brier", "cum_surprise")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.keys: set[str] = set()
        self.cum_brier: list[float] = [0.0]
        self.cum_surprise: list[float] = [0.0]

    def add(self, market_id: str, resolved_at: float, final_price: float, outcome: float) -> None:
        if market_id in self.keys:
            return
        self.keys.add(market_id)
        error = final_price - outcome
        at = bisect.bisect_right(self.times, resolved_at)
        self.times.insert(at, resolved_at)
        briers = [b - a for a, b in zip(self.cum_brier, self.cum_brier[1:], strict=False)]
        surprises = [b - a for a, b in zip(self.cum_surprise, self.cum_surprise[1:], strict=False)]
        briers.insert(at, error * error)
        surprises.insert(at, abs(error))
        self.cum_brier = [0.0, *_cumsum(briers)]
        self.cum_surprise = [0.0, *_cumsum(surprises)]

    def as_of(self, t: float) -> tuple[float | None, float | None]:
        """(historical_accuracy, category_risk) from resolutions strictly before t; None before the first."""
        n = bisect.bisect_left(self.times, t)
        if n == 0:
            return None, None
        return _clamp01(1.0 - self.cum_brier[n] / n), _clamp01(self.cum_surprise[n] / n)


def _cumsum(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


# --- the vector ---------------------------------------------------------------------------------------


def compute(s: MarketState, config: FeatureConfig, history: CategoryHistory | None, as_of: float) -> dict[str, Any]:
    """The MarketFeatures fields of a market as of `as_of` (its watermark when published)."""
    window, prices = s.window, s.prices
    if len(prices) != 3 * len(window):  # (the window was replaced wholesale)
        prices = s.prices = _prices(window)
    volatility = momentum = liquidity = None
    if len(window) >= 2:
        previous = prices[0]
        squares = 0.0
        volume = 0.0
        moved = 0.0
        flat = iter(prices)
        for before, after, amount in zip(flat, flat, flat, strict=True):  # the window's trades, oldest first
            d = after - previous
            squares += d * d
            previous = after
            moved += abs(after - before)
            volume += amount
        volatility = math.sqrt(squares / len(window))
        momentum = prices[-2] - prices[0]
        if moved > 0.0:
            liquidity = volume / (100.0 * moved)

    bucket_s = config.volume_bucket_s
    now_bucket = int(as_of // bucket_s)
    recent_from = now_bucket - config.trend_recent_s // bucket_s + 1
    baseline_from = recent_from - config.trend_baseline_s // bucket_s
    if s.trend_key == now_bucket:
        recent, baseline = s.trend_recent, s.trend_baseline
    else:
        recent = baseline = 0
        for b, units in s.volume_buckets.items():
            if b >= recent_from:
                if b <= now_bucket:
                    recent += units
            elif b >= baseline_from:
                baseline += units
        s.trend_key, s.trend_recent, s.trend_baseline = now_bucket, recent, baseline
    history_s = min(float(config.trend_baseline_s), recent_from * bucket_s - s.first_at)
    volume_trend = None
    if history_s > 0:
        hourly = baseline * (config.trend_recent_s / history_s)
        if recent + hourly > 0:
            volume_trend = (recent - hourly) / (recent + hourly)

    accuracy = risk = None
    if history is not None:
        accuracy, risk = history.as_of(as_of)
    return {
        "current_price": s.price,
        "total_volume": s.volume_units / VOLUME_SCALE,
        "participant_count": s.participants.count(),
        "trade_count": s.trade_count,
        "days_remaining": None if s.close_at is None else max(0.0, (s.close_at - as_of) / 86_400.0),
        "price_volatility": volatility,
        "volume_trend": volume_trend,
        "social_sentiment": _sentiment(s.social, config, as_of),
        "news_sentiment": _sentiment(s.news, config, as_of),
        "historical_accuracy": accuracy,
        "category_risk": risk,
        "liquidity_score": liquidity,
        "momentum_indicator": momentum,
    }


def _sentiment(buckets: dict[int, list[int]], config: FeatureConfig, as_of: float) -> float | None:
    if not buckets:
        return None
    now = int(as_of // config.sentiment_bucket_s)
    start = now - config.sentiment_window_s // config.sentiment_bucket_s + 1
    total = count = 0
    for b, (units, n) in buckets.items():
        if start <= b <= now:
            total += units
            count += n
    if not count:
        return None
    return max(-1.0, min(1.0, total / count / SENTIMENT_SCALE))
