"""Manifold Markets' public API records (markets and bets) to the generic history records.

Accepts JSON (an array), JSON lines or CSV, camelCase or snake_case names, times as epoch milliseconds or ISO 8601;
PATH is a file or a folder holding a markets file and a bets file (names containing "market" and "bet").

Partial dumps are fine: a bet with only `contractId`, `userId`, `createdTime`, `probBefore`, `probAfter` becomes a
BUY of the side the price moved towards, its amount estimated (and marked `amount_estimated`) as the LMSR cost of
that move with liquidity ``b = max(totalLiquidity, 100) / ln 2`` (an LMSR market maker subsidised with L loses at
most ``b ln 2 = L``): buying YES from p0 to p1 costs ``b ln((1 - p0) / (1 - p1))``, NO ``b ln(p0 / p1)``; shares
``b |logit(p1) - logit(p0)|``. Redemptions (`isRedemption`) are not trades and are skipped. A market needs an id,
a creation time and a close or resolution time; its question falls back to the description, then the id.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from om_cli.history.format import (
    MarketRecord,
    Record,
    ResolutionRecord,
    TradeRecord,
    parse_time,
    read_rows,
)

PREFIX = "mf-"
DEFAULT_LIQUIDITY = 100.0
_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass
class Rejects:
    """Rows that could not be used, with reasons (counted, and the first few kept as examples)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, what: str, reason: str, ident: str = "") -> None:
        key = f"{what}: {reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{what} {ident or '?'}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """snake_case or camelCase keys to Manifold's camelCase."""
    return {_camel(k) if "_" in k and not k.startswith("__") else k: v for k, v in row.items()}


def market_id(raw: Any) -> str:
    return (PREFIX + _SAFE.sub("_", str(raw)))[:64]


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not a finite number")
    return f


def _bool(v: Any) -> bool:
    return v in (True, "true", "True", "TRUE", "1", 1)


def _synthetic_id(row: dict[str, Any], n: int) -> str:
    """A bet without an id: a hash of what identifies it, stable across re-exports (not the row number)."""
    parts = [str(row.get(k)) for k in ("contractId", "userId", "createdTime", "probBefore", "probAfter")]
    if all(p == "None" for p in parts):
        return f"row{n}"
    return "h" + hashlib.blake2b("|".join(parts).encode(), digest_size=10).hexdigest()


def find_files(path: Path) -> tuple[Path | None, Path | None]:
    """(markets file, bets file) of PATH: a folder, or one file whose rows say which kind it holds."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl", ".csv"))
        markets = next((p for p in files if "market" in p.name.lower() or "contract" in p.name.lower()), None)
        bets = next((p for p in files if "bet" in p.name.lower()), None)
        return markets, bets
    first = next(iter(read_rows(path)), {})
    return (None, path) if "contractId" in normalise(first) else (path, None)


def _estimate(p0: float, p1: float, liquidity: float) -> tuple[str, float, float]:
    """(outcome, amount, shares) of an LMSR buy moving the YES price from p0 to p1."""
    b = max(liquidity, DEFAULT_LIQUIDITY) / math.log(2)
    p0, p1 = min(max(p0, 1e-6), 1 - 1e-6), min(max(p1, 1e-6), 1 - 1e-6)
    shares = b * abs(math.log(p1 / (1 - p1)) - math.log(p0 / (1 - p0)))
    if p1 > p0:
        return "YES", b * math.log((1 - p0) / (1 - p1)), shares
    return "NO", b * math.log(p0 / p1), shares


def convert(
    markets_rows: Iterable[dict[str, Any]], bets_rows: Iterable[dict[str, Any]], rejects: Rejects
) -> list[Record]:
    """Generic records (markets, trades, resolutions) in event-time order per market; bad rows go to `rejects`."""
    markets: dict[str, dict[str, Any]] = {}
    for raw in markets_rows:
        row = normalise(raw)
        ident = row.get("id")
        if "__error__" in row:
            rejects.add("market", row["__error__"])
            continue
        if not ident:
            rejects.add("market", "no id")
            continue
        markets[market_id(ident)] = row
    bets: dict[str, list[TradeRecord]] = {}
    first_bet: dict[str, datetime] = {}
    last_bet: dict[str, datetime] = {}
    for n, raw in enumerate(bets_rows):
        row = normalise(raw)
        ident = str(row.get("id") or _synthetic_id(row, n))
        try:
            if "__error__" in row:
                raise ValueError(row["__error__"])
            if _bool(row.get("isRedemption")):
                rejects.add("bet", "redemption (not a trade)", ident)
                continue
            if not row.get("contractId"):
                raise ValueError("no contractId")
            mid = market_id(row["contractId"])
            if mid not in markets:
                raise ValueError("its market is not in the markets file")
            if not row.get("userId"):
                raise ValueError("no userId")
            at = parse_time(row.get("createdTime"))
            p0, p1 = _float(row.get("probBefore")), _float(row.get("probAfter"))
            if p0 is None or p1 is None or not (0 <= p0 <= 1 and 0 <= p1 <= 1):
                raise ValueError("probBefore/probAfter missing or not in [0, 1]")
            amount, shares, outcome = _float(row.get("amount")), _float(row.get("shares")), row.get("outcome")
            side, estimated = "BUY", False
            if amount is not None and amount < 0:
                side, amount = "SELL", -amount
            if shares is not None and shares < 0:
                shares = -shares
            if not amount or not shares or outcome not in ("YES", "NO"):
                if p0 == p1:
                    raise ValueError("no amount, shares or outcome, and no price move to infer them from")
                liquidity = _float(markets[mid].get("totalLiquidity")) or DEFAULT_LIQUIDITY
                outcome, amount, shares = _estimate(p0, p1, liquidity)
                side, estimated = "BUY", True
            trade = TradeRecord(
                trade_id=("mf-" + _SAFE.sub("_", ident))[:64],
                market_id=mid,
                user_id=str(row["userId"])[:64],
                outcome=str(outcome),
                side=side,
                amount=round(amount, 6),
                shares=round(shares, 6),
                price_before=p0,
                price_after=p1,
                executed_at=at,
                amount_estimated=estimated,
            )
        except (ValueError, TypeError) as exc:
            rejects.add("bet", str(exc), ident)
            continue
        bets.setdefault(mid, []).append(trade)
        first_bet[mid] = min(first_bet.get(mid, at), at)
        last_bet[mid] = max(last_bet.get(mid, at), at)
    out: list[Record] = []
    for mid, row in markets.items():
        try:
            if not row.get("createdTime"):
                raise ValueError("no createdTime")
            created = parse_time(row["createdTime"])
            resolved_at = parse_time(row["resolutionTime"]) if row.get("resolutionTime") else None
            close = parse_time(row["closeTime"]) if row.get("closeTime") else resolved_at or last_bet.get(mid)
            if close is None:
                raise ValueError("no closeTime, resolutionTime or bets to date its close")
            trades = sorted(bets.get(mid, []), key=lambda t: (t.executed_at, t.trade_id))
            question = str(row.get("question") or row.get("description") or row["id"])[:500]
            groups = row.get("groupSlugs")
            category = groups[0] if isinstance(groups, list) and groups else str(groups or "manifold").split(",")[0]
            out.append(
                MarketRecord(
                    market_id=mid,
                    question=question,
                    category=_SAFE.sub("-", category)[:64] or "manifold",
                    created_at=created,
                    close_at=max(close, created),
                    initial_price=trades[0].price_before if trades else 0.5,
                )
            )
            out.extend(t for t in trades if t.executed_at >= created)
            for t in trades:
                if t.executed_at < created:
                    rejects.add("bet", "before its market was created", t.trade_id)
            resolution = str(row.get("resolution") or "").upper()
            if _bool(row.get("isResolved", bool(resolution))) and resolution in ("YES", "NO", "MKT", "CANCEL"):
                when = resolved_at or close
                price = {"YES": 1.0, "NO": 0.0, "CANCEL": None}.get(
                    resolution, _float(row.get("resolutionProbability"))
                )
                if resolution == "MKT" and price is None:
                    raise ValueError("MKT resolution without resolutionProbability")
                closed = min(close, when)
                out.append(ResolutionRecord(mid, max(closed, created), resolution, price, max(when, created)))
        except (ValueError, TypeError, KeyError) as exc:
            rejects.add("market", str(exc), mid)
    return out


def read_manifold(path: Path, rejects: Rejects) -> list[Record]:
    markets_file, bets_file = find_files(path)
    if markets_file is None:
        raise ValueError(f"no markets file in {path} (a file whose name holds 'market' or a markets dump)")
    return convert(read_rows(markets_file), read_rows(bets_file) if bets_file else [], rejects)
