"""The generic history format: four record kinds, each a JSON-lines or CSV file in one folder.

    markets.jsonl      market_id, question, category, created_at, close_at, initial_price
    trades.jsonl       trade_id, market_id, user_id, outcome, side, amount, shares, price_before, price_after,
                       executed_at, amount_estimated
    signals.jsonl      signal_id, market_id, kind, source, text, sentiment, observed_at
    resolutions.jsonl  market_id, closed_at, resolution (YES|NO|MKT|CANCEL), resolution_price, resolved_at, reason

`.csv` files with the same column names work too (empty cell = missing). Times are ISO 8601 with an offset, or
epoch milliseconds. Documented in docs/history-formats.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

Kind = Literal["markets", "trades", "signals", "resolutions"]
KINDS: tuple[Kind, ...] = ("markets", "trades", "signals", "resolutions")


@dataclass(frozen=True)
class MarketRecord:
    market_id: str
    question: str
    category: str
    created_at: datetime
    close_at: datetime
    initial_price: float = 0.5


@dataclass(frozen=True)
class TradeRecord:
    trade_id: str
    market_id: str
    user_id: str
    outcome: str
    side: str
    amount: float
    shares: float
    price_before: float
    price_after: float
    executed_at: datetime
    amount_estimated: bool = False


@dataclass(frozen=True)
class SignalRecord:
    signal_id: str
    market_id: str
    kind: str
    source: str
    text: str
    sentiment: float | None
    observed_at: datetime


@dataclass(frozen=True)
class ResolutionRecord:
    market_id: str
    closed_at: datetime
    resolution: str  # YES, NO, MKT or CANCEL
    resolution_price: float | None
    resolved_at: datetime
    reason: str = ""


Record = MarketRecord | TradeRecord | SignalRecord | ResolutionRecord
RECORD_TYPES: dict[Kind, type] = {
    "markets": MarketRecord,
    "trades": TradeRecord,
    "signals": SignalRecord,
    "resolutions": ResolutionRecord,
}
KIND_OF: dict[type, Kind] = {v: k for k, v in RECORD_TYPES.items()}


def parse_time(value: Any) -> datetime:
    """ISO 8601 (a missing offset means UTC) or epoch milliseconds, to an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a time: {value!r}")
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def to_row(record: Record) -> dict[str, Any]:
    return {k: _plain(v) for k, v in asdict(record).items()}


class HistoryWriter:
    """Appends records to `<dir>/<kind>.<jsonl|csv>`; use as a context manager."""

    def __init__(self, directory: Path, fmt: Literal["jsonl", "csv"] = "jsonl") -> None:
        self.directory = directory
        self.fmt = fmt
        self._files: dict[Kind, IO[str]] = {}
        self._csv: dict[Kind, Any] = {}
        self.counts: dict[Kind, int] = dict.fromkeys(KINDS, 0)

    def __enter__(self) -> HistoryWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            f = (self.directory / f"{kind}.{self.fmt}").open("w", newline="" if self.fmt == "csv" else None)
            self._files[kind] = f
            if self.fmt == "csv":
                writer = csv.DictWriter(f, fieldnames=[x.name for x in fields(RECORD_TYPES[kind])])
                writer.writeheader()
                self._csv[kind] = writer
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files.values():
            f.close()

    def write(self, record: Record) -> None:
        kind = KIND_OF[type(record)]
        row = to_row(record)
        if self.fmt == "csv":
            self._csv[kind].writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self._files[kind].write(json.dumps(row, separators=(",", ":")) + "\n")
        self.counts[kind] += 1


def history_file(directory: Path, kind: Kind) -> Path | None:
    for ext in ("jsonl", "csv", "json"):
        path = directory / f"{kind}.{ext}"
        if path.exists():
            return path
    return None


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Raw rows of a JSON-lines, JSON (array) or CSV file; CSV empty cells become None."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                yield {k: (None if v == "" else v) for k, v in row.items()}
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        yield from data if isinstance(data, list) else [data]
    else:
        with path.open() as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {"__error__": f"line {n}: not JSON ({exc.msg})"}


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    return float(v)


def _bool(v: Any) -> bool:
    return v in (True, "true", "True", "1", 1)


def parse_record(kind: Kind, row: dict[str, Any]) -> Record:
    """One raw row as a record; raises ValueError (with the field) on a bad row."""
    if "__error__" in row:
        raise ValueError(row["__error__"])
    try:
        if kind == "markets":
            return MarketRecord(
                market_id=str(row["market_id"]),
                question=str(row.get("question") or row["market_id"]),
                category=str(row.get("category") or "general"),
                created_at=parse_time(row["created_at"]),
                close_at=parse_time(row["close_at"]),
                initial_price=_float(row.get("initial_price")) or 0.5,
            )
        if kind == "trades":
            return TradeRecord(
                trade_id=str(row["trade_id"]),
                market_id=str(row["market_id"]),
                user_id=str(row["user_id"]),
                outcome=str(row["outcome"]),
                side=str(row.get("side") or "BUY"),
                amount=float(row["amount"]),
                shares=float(row["shares"]),
                price_before=float(row["price_before"]),
                price_after=float(row["price_after"]),
                executed_at=parse_time(row["executed_at"]),
                amount_estimated=_bool(row.get("amount_estimated")),
            )
        if kind == "signals":
            return SignalRecord(
                signal_id=str(row["signal_id"]),
                market_id=str(row["market_id"]),
                kind=str(row["kind"]),
                source=str(row["source"]),
                text=str(row["text"]),
                sentiment=_float(row.get("sentiment")),
                observed_at=parse_time(row["observed_at"]),
            )
        return ResolutionRecord(
            market_id=str(row["market_id"]),
            closed_at=parse_time(row["closed_at"]),
            resolution=str(row["resolution"]),
            resolution_price=_float(row.get("resolution_price")),
            resolved_at=parse_time(row["resolved_at"]),
            reason=str(row.get("reason") or ""),
        )
    except KeyError as exc:
        raise ValueError(f"missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def read_history(directory: Path) -> dict[Kind, list[Record]]:
    """Every record of a history folder (bad rows raise; the importer reports them instead)."""
    out: dict[Kind, list[Record]] = {k: [] for k in KINDS}
    for kind in KINDS:
        path = history_file(directory, kind)
        if path is not None:
            out[kind] = [parse_record(kind, row) for row in read_rows(path)]
    return out


def write_history(
    directory: Path, records: Iterable[Record], fmt: Literal["jsonl", "csv"] = "jsonl"
) -> dict[Kind, int]:
    with HistoryWriter(directory, fmt) as writer:
        for record in records:
            writer.write(record)
    return writer.counts
