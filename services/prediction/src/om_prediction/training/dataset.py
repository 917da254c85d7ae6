"""The point-in-time dataset: snapshot rows in the feature export's shape (interfaces item 3) to arrays.

A row is ``{"market_id", "category", "as_of", "close_at", "created_at", "resolved_at", "resolution",
"resolution_price", "features": {...}}``: the features as the feature service knew them at ``as_of``, labelled
with the market's resolution. The split is by time at the market level: markets resolved first train, the next
validate (stacking and calibration), the last are held out for the report; no market is on two sides.
`check_point_in_time` refuses rows that could leak the future.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from om_prediction.model import FEATURES, _num

#: Rows a market gives the dataset at most (see `sample_per_market`).
ROWS_PER_MARKET = 32


class LeakError(ValueError):
    """A row was taken at or after its market closed or resolved."""


def _time(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))


@dataclass
class Dataset:
    market_ids: np.ndarray
    resolved_at: np.ndarray  # epoch seconds
    days_remaining: np.ndarray
    liquidity: np.ndarray  # total volume at as_of
    x: np.ndarray
    y: np.ndarray  # 1 YES, 0 NO (MKT-resolved and cancelled markets are left out)
    market_price: np.ndarray
    first_as_of: datetime | None
    last_resolved: datetime | None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            self.market_ids[mask],
            self.resolved_at[mask],
            self.days_remaining[mask],
            self.liquidity[mask],
            self.x[mask],
            self.y[mask],
            self.market_price[mask],
            self.first_as_of,
            self.last_resolved,
        )


def check_point_in_time(row: dict[str, Any]) -> None:
    as_of = _time(row["as_of"])
    for bound in ("close_at", "resolved_at"):
        if row.get(bound) is not None and as_of >= _time(row[bound]):
            raise LeakError(f"row of {row['market_id']} taken at {as_of.isoformat()}, not before its {bound}")


def sample_per_market(
    rows: Iterable[dict[str, Any]], per_market: int = ROWS_PER_MARKET, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """At most `per_market` rows of each market: the market's state at seeded times spread uniformly over its life.

    Feature's export holds a snapshot per market per 15 min of event time with activity (about 90 a market for
    simulated history), so taken whole it weights a market by its activity, and most rows of a market lie where
    trading is dense. The offline sampler (`om_cli.history.offline_features`) takes a market's state at 8 seeded
    times uniform over its life. This gives the export the same weighting: for each of `per_market` times drawn
    like the offline sampler's, the latest snapshot at or before it (each snapshot once). A market with no more
    rows than that (offline rows) is kept whole. Rows stay in the input's order."""
    by_market: dict[str, list[tuple[datetime, int, dict[str, Any]]]] = {}
    for n, row in enumerate(rows):
        by_market.setdefault(row["market_id"], []).append((_time(row["as_of"]), n, row))
    chosen: list[tuple[int, dict[str, Any]]] = []
    for market_id, snaps in by_market.items():
        if len(snaps) <= per_market:
            chosen += [(n, row) for _, n, row in snaps]
            continue
        snaps.sort(key=lambda s: (s[0], s[1]))
        row = snaps[0][2]
        created = _time(row["created_at"]) if row.get("created_at") else snaps[0][0]
        end = min(_time(row[k]) for k in ("close_at", "resolved_at") if row.get(k) is not None)
        rng = random.Random(f"{seed}:{market_id}")  # nosec B311  # seeded, reproducible sampling; no secret
        times = [snap[0] for snap in snaps]
        picked = {
            bisect.bisect_right(times, created + (end - created) * rng.uniform(0.02, 0.999)) - 1
            for _ in range(per_market)
        }
        chosen += [(snaps[i][1], snaps[i][2]) for i in sorted(picked) if i >= 0]
    chosen.sort(key=lambda c: c[0])
    return (row for _, row in chosen)


def build(
    rows: Iterable[dict[str, Any]],
    features: tuple[str, ...] = FEATURES,
    *,
    per_market: int | None = ROWS_PER_MARKET,
    seed: int = 0,
) -> Dataset:
    """Binary-labelled arrays from export rows (YES/NO only: a MKT resolution has no binary outcome), at most
    `per_market` rows a market (`sample_per_market`; None: every row)."""
    ids, resolved, days, liq, xs, ys, prices = [], [], [], [], [], [], []
    first: datetime | None = None
    last: datetime | None = None
    binary = [row for row in rows if row.get("resolution") in ("YES", "NO")]
    for row in binary:
        check_point_in_time(row)
    for row in binary if per_market is None else sample_per_market(binary, per_market, seed):
        f = row["features"]
        as_of, resolved_at = _time(row["as_of"]), _time(row["resolved_at"])
        first = as_of if first is None or as_of < first else first
        last = resolved_at if last is None or resolved_at > last else last
        ids.append(row["market_id"])
        resolved.append(resolved_at.timestamp())
        days.append(_num(f.get("days_remaining")))
        liq.append(_num(f.get("total_volume")))
        xs.append([_num(f.get(name)) for name in features])
        ys.append(1.0 if row["resolution"] == "YES" else 0.0)
        prices.append(float(f["current_price"]))
    return Dataset(
        np.array(ids, dtype=object),
        np.array(resolved),
        np.array(days),
        np.array(liq),
        np.array(xs, dtype=np.float64).reshape(len(xs), len(features)),
        np.array(ys),
        np.array(prices),
        first,
        last,
    )


def time_split(data: Dataset, fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[Dataset, Dataset, Dataset]:
    """Train / validation / test by each market's resolution time (earliest markets train)."""
    order: dict[str, float] = {}
    for market, t in zip(data.market_ids, data.resolved_at, strict=True):
        order[market] = t
    markets = sorted(order, key=lambda m: (order[m], m))
    n = len(markets)
    a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    fold = {m: 0 if i < a else 1 if i < b else 2 for i, m in enumerate(markets)}
    which = np.array([fold[m] for m in data.market_ids])
    return data.take(which == 0), data.take(which == 1), data.take(which == 2)
