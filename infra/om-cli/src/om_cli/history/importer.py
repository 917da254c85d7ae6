"""Load history records into a running platform through its public write API (the gateway).

Per market, in event-time order: create (with its original time), trades in batches, signals, close, resolve or
cancel, each write with its original `occurred_at` and a deterministic `Idempotency-Key`, so importing twice adds
nothing (replays and 409 "already exists" count as skipped). A checkpoint file lists the markets finished, so an
interrupted import resumes where it stopped. Rows the platform refuses (422) are rejected with its reason and the
rest go on. All HTTP goes through `make_client`, the one place that sets the URL and credentials.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from om_cli.credentials import auth_headers
from om_cli.history.format import MarketRecord, Record, ResolutionRecord, SignalRecord, TradeRecord
from om_cli.history.manifold import Rejects

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
TRADE_BATCH = 500


def make_client(
    url: str | None = None, api_key: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The importer's only HTTP client: base URL, `Authorization: Bearer` credential, timeouts."""
    headers = auth_headers(api_key)  # the explicit key, else $OM_API_KEY, else the key `make up` saved
    return httpx.AsyncClient(
        base_url=url or os.environ.get("OM_API_URL", DEFAULT_URL),
        headers=headers,
        timeout=60.0,
        transport=transport,
    )


@dataclass
class ImportReport:
    imported: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: Rejects = field(default_factory=Rejects)
    resumed_markets: int = 0

    def lines(self) -> list[str]:
        out = [
            f"imported: {dict(self.imported) or 'nothing'}",
            f"skipped (already there): {dict(self.skipped) or 'nothing'}"
            + (f", {self.resumed_markets} markets finished by an earlier run" if self.resumed_markets else ""),
            f"rejected: {self.rejected.total}",
        ]
        out += [f"  {n} x {reason}" for reason, n in sorted(self.rejected.counts.items(), key=lambda kv: -kv[1])]
        out += [f"  e.g. {example}" for example in self.rejected.examples[:5]]
        return out


def _iso(t: datetime) -> str:
    return t.isoformat()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(detail, list):
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return f"HTTP {response.status_code}: {str(detail)[:300]}"


class _Loader:
    def __init__(self, client: httpx.AsyncClient, report: ImportReport, api: str, source: str) -> None:
        self.client = client
        self.report = report
        self.api = api
        self.source = source

    async def _post(self, path: str, body: dict[str, Any] | None, key: str) -> httpx.Response:
        for attempt in range(6):
            try:
                response = await self.client.post(
                    self.api + path, json=body, headers={"Idempotency-Key": f"import:{self.source}:{key}"[:200]}
                )
            except httpx.TransportError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            # a 500 is retried too: every write carries its Idempotency-Key, so a retry never doubles anything
            if response.status_code in (429, 500, 502, 503, 504) and attempt < 5:
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            return response
        raise AssertionError("unreachable")

    def _count(self, kind: str, response: httpx.Response, ident: str) -> bool:
        """Tally one write's outcome; True if the record is in the platform now."""
        if response.status_code == 201 and response.headers.get("Idempotency-Replayed") != "true":
            self.report.imported[kind] += 1
            return True
        if response.status_code in (200, 201, 409):
            self.report.skipped[kind] += 1
            return True
        self.report.rejected.add(kind, _detail(response), ident)
        return False

    async def market(
        self,
        market: MarketRecord,
        trades: list[TradeRecord],
        signals: list[SignalRecord],
        settlement: ResolutionRecord | None,
    ) -> None:
        mid = market.market_id
        body = {
            "market_id": mid,
            "question": market.question,
            "category": market.category,
            "close_at": _iso(market.close_at),
            "initial_price": market.initial_price,
            "occurred_at": _iso(market.created_at),
        }
        if not self._count("markets", await self._post("/markets", body, f"market:{mid}"), mid):
            for kind, n in (("trades", len(trades)), ("signals", len(signals))):
                for _ in range(n):
                    self.report.rejected.add(kind, "its market was rejected", mid)
            return
        for i in range(0, len(trades), TRADE_BATCH):
            await self._trades(trades[i : i + TRADE_BATCH])
        for s in signals:
            body = {
                "signal_id": s.signal_id,
                "market_id": mid,
                "kind": s.kind,
                "source": s.source,
                "text": s.text,
                "sentiment": s.sentiment,
                "occurred_at": _iso(s.observed_at),
            }
            self._count("signals", await self._post("/signals", body, f"signal:{s.signal_id}"), s.signal_id)
        if settlement is not None:
            close = {"occurred_at": _iso(settlement.closed_at)}
            self._count("closes", await self._post(f"/markets/{mid}/close", close, f"close:{mid}"), mid)
            when = {"occurred_at": _iso(settlement.resolved_at)}
            if settlement.resolution == "CANCEL":
                response = await self._post(
                    f"/markets/{mid}/cancel", {**when, "reason": settlement.reason}, f"cancel:{mid}"
                )
                self._count("cancellations", response, mid)
            else:
                body = {**when, "resolution": settlement.resolution}
                if settlement.resolution == "MKT":
                    body["resolution_price"] = settlement.resolution_price
                self._count("resolutions", await self._post(f"/markets/{mid}/resolve", body, f"resolve:{mid}"), mid)

    async def _trades(self, trades: list[TradeRecord]) -> None:
        bodies = [_trade_body(t) for t in trades]
        key = f"trades:{trades[0].trade_id}:{len(trades)}"
        response = await self._post("/trades/batch", {"trades": bodies}, key)
        if response.status_code in (200, 201):
            recorded = int(response.json().get("recorded", len(trades)))
            replayed = response.headers.get("Idempotency-Replayed") == "true"
            self.report.imported["trades"] += 0 if replayed else recorded
            self.report.skipped["trades"] += len(trades) if replayed else len(trades) - recorded
            return
        for t, body in zip(trades, bodies, strict=True):  # one bad row fails a batch: find it, keep the rest
            self._count("trades", await self._post("/trades", body, f"trade:{t.trade_id}"), t.trade_id)


def _trade_body(t: TradeRecord) -> dict[str, Any]:
    return {
        "trade_id": t.trade_id,
        "market_id": t.market_id,
        "user_id": t.user_id,
        "outcome": t.outcome,
        "side": t.side,
        "amount": t.amount,
        "shares": t.shares,
        "price": t.price_after,
        "occurred_at": _iso(t.executed_at),
        "amount_estimated": t.amount_estimated,
    }


async def import_records(
    client: httpx.AsyncClient,
    records: list[Record],
    *,
    source: str,
    checkpoint: Path | None = None,
    api: str = API,
    concurrency: int = 8,
    progress: bool = True,
    report: ImportReport | None = None,
) -> ImportReport:
    from tqdm import tqdm

    report = report or ImportReport()
    markets: dict[str, MarketRecord] = {}
    trades: dict[str, list[TradeRecord]] = defaultdict(list)
    signals: dict[str, list[SignalRecord]] = defaultdict(list)
    settled: dict[str, ResolutionRecord] = {}
    for r in records:
        if isinstance(r, MarketRecord):
            markets[r.market_id] = r
        elif isinstance(r, TradeRecord):
            trades[r.market_id].append(r)
        elif isinstance(r, SignalRecord):
            signals[r.market_id].append(r)
        else:
            settled[r.market_id] = r
    for kind, table in (("trades", trades), ("signals", signals), ("resolutions", settled)):
        for mid in [m for m in table if m not in markets]:
            rows = table[mid]
            n = len(rows) if isinstance(rows, list) else 1
            for _ in range(n):
                report.rejected.add(kind, "no such market in the markets file", mid)
    done = _finished(checkpoint)
    report.resumed_markets = len(done & markets.keys())
    todo = [m for m in sorted(markets.values(), key=lambda m: (m.created_at, m.market_id)) if m.market_id not in done]
    loader = _Loader(client, report, api, source)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(todo), unit="market", desc="import", disable=not progress)
    log = checkpoint.open("a") if checkpoint is not None else None

    async def one(m: MarketRecord) -> None:
        async with gate:
            await loader.market(
                m,
                sorted(trades.get(m.market_id, []), key=lambda t: (t.executed_at, t.trade_id)),
                sorted(signals.get(m.market_id, []), key=lambda s: (s.observed_at, s.signal_id)),
                settled.get(m.market_id),
            )
            if log is not None:
                log.write(m.market_id + "\n")
                log.flush()
            bar.update()

    try:
        await asyncio.gather(*(one(m) for m in todo))
    finally:
        bar.close()
        if log is not None:
            log.close()
    return report


def _finished(checkpoint: Path | None) -> set[str]:
    if checkpoint is None or not checkpoint.exists():
        return set()
    return {line.strip() for line in checkpoint.read_text().splitlines() if line.strip()}


def checkpoint_for(path: Path, url: str) -> Path:
    """Where an import of PATH into URL records its progress: beside the data, one file per target."""
    folder = path if path.is_dir() else path.parent
    safe = "".join(c if c.isalnum() else "_" for c in url)
    return folder / f".om-import-{safe}.done"


def summary_json(report: ImportReport) -> str:
    return json.dumps(
        {"imported": report.imported, "skipped": report.skipped, "rejected": report.rejected.counts}, indent=2
    )


def read_generic(path: Path, rejects: Rejects) -> list[Record]:
    """A generic-format folder's records; bad rows are rejected with the field at fault, the rest kept."""
    from om_cli.history.format import KINDS, history_file, parse_record, read_rows

    out: list[Record] = []
    for kind in KINDS:
        file = history_file(path, kind)
        if file is None:
            continue
        for n, row in enumerate(read_rows(file), start=1):
            try:
                out.append(parse_record(kind, row))
            except ValueError as exc:
                rejects.add(kind, str(exc), f"{file.name} row {n}")
    return out


def run_from_args(args: Any) -> int:
    """`om import [manifold] PATH`."""
    from om_cli.history.manifold import read_manifold

    what = list(args.what)
    kind = what.pop(0) if len(what) == 2 else "generic"
    if kind not in ("generic", "manifold") or len(what) != 1:
        print("usage: om import [manifold] PATH")
        return 2
    path = Path(what[0])
    if not path.exists():
        print(f"error: {path} does not exist")
        return 1
    report = ImportReport()
    try:
        records = read_manifold(path, report.rejected) if kind == "manifold" else read_generic(path, report.rejected)
    except ValueError as exc:
        print(f"error: {exc}")
        return 1
    url = args.url or os.environ.get("OM_API_URL", DEFAULT_URL)
    checkpoint = checkpoint_for(path, url)
    if args.restart and checkpoint.exists():
        checkpoint.unlink()

    async def go() -> None:
        async with make_client(url, args.api_key) as client:
            await import_records(
                client, records, source=kind, checkpoint=checkpoint, concurrency=args.concurrency, report=report
            )

    try:
        asyncio.run(go())
    except httpx.HTTPError as exc:
        print(f"error: the platform at {url} does not answer ({type(exc).__name__}); rerun to resume")
        return 1
    for line in report.lines():
        print(line)
    return 0
