"""Load history records into a running platform through its public write API (the gateway).

Per market, in event-time order: create (with its original time), trades in batches, signals, close, resolve or
cancel, each write with its original `occurred_at` and a deterministic `Idempotency-Key`, so importing twice adds
nothing (replays and 409 "already exists" count as skipped). A checkpoint file lists the markets finished, so an
interrupted import resumes where it stopped. Rows the platform refuses (422) are rejected with its reason and the
rest go on. All HTTP goes through `make_client`, the one place that sets the URL and credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from om_cli.credentials import auth_headers
from om_cli.history.format import MarketRecord, Record, ResolutionRecord, SignalRecord, TradeRecord
from om_cli.history.manifold import Rejects

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
BATCH = 1000  # records a batch write takes at most (trades or signals)
#: The feature service's grace period (`FeatureConfig.grace_s`): how much older than its market's newest event an
#: event may arrive and still count in full. Steps (see `market_steps`) keep the arrival order within it.
GRACE = timedelta(seconds=300)
#: How much event time a market's writes may run ahead of a resolution not yet sent (see `import_records`).
STALENESS = timedelta(days=7)


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


class CredentialRefused(Exception):
    """The platform answered 401 or 403: every later write would be refused too, so the import stops at once."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {_detail(response)}")
        self.status_code = response.status_code


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
            if response.status_code in (401, 403):
                raise CredentialRefused(response)
            # a 500 is retried too: every write carries its Idempotency-Key, so a retry never doubles anything
            if response.status_code in (429, 500, 502, 503, 504) and attempt < 5:
                await asyncio.sleep(0.5 * 2**attempt)
                continue
            return response
        raise AssertionError("unreachable")

    def _count(self, kind: str, response: httpx.Response, ident: str, *, written: int = 201) -> bool:
        """Tally one write's outcome; True if the record is in the platform now. `written` is the status of a
        write that changed something (201 for a record; 200 for a close, resolution or cancellation, whose
        repeat is a 409 or a replay)."""
        if response.status_code == written and response.headers.get("Idempotency-Replayed") != "true":
            self.report.imported[kind] += 1
            return True
        if response.status_code in (200, 201, 409):
            self.report.skipped[kind] += 1
            return True
        self.report.rejected.add(kind, _detail(response), ident)
        return False

    async def create(self, market: MarketRecord) -> bool:
        mid = market.market_id
        body = {
            "market_id": mid,
            "question": market.question,
            "category": market.category,
            "close_at": _iso(market.close_at),
            "initial_price": market.initial_price,
            "occurred_at": _iso(market.created_at),
        }
        return self._count("markets", await self._post("/markets", body, f"market:{mid}"), mid)

    async def settle(self, mid: str, settlement: ResolutionRecord) -> None:
        close = {"occurred_at": _iso(settlement.closed_at)}
        self._count("closes", await self._post(f"/markets/{mid}/close", close, f"close:{mid}"), mid, written=200)
        when = {"occurred_at": _iso(settlement.resolved_at)}
        if settlement.resolution == "CANCEL":
            response = await self._post(
                f"/markets/{mid}/cancel", {**when, "reason": settlement.reason}, f"cancel:{mid}"
            )
            self._count("cancellations", response, mid, written=200)
        else:
            body: dict[str, Any] = {**when, "resolution": settlement.resolution}
            if settlement.resolution == "MKT":
                body["resolution_price"] = settlement.resolution_price
            response = await self._post(f"/markets/{mid}/resolve", body, f"resolve:{mid}")
            self._count("resolutions", response, mid, written=200)

    async def batch(self, kind: Literal["trades", "signals"], records: list[TradeRecord] | list[SignalRecord]) -> None:
        """One batch write of up to BATCH records (of any markets). A batch is all or nothing, so if it is refused
        its records go one by one: the bad ones are rejected with their reason and the rest are recorded."""
        ids = [r.trade_id if isinstance(r, TradeRecord) else r.signal_id for r in records]
        bodies = [_trade_body(r) if isinstance(r, TradeRecord) else _signal_body(r) for r in records]
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:24]
        response = await self._post(f"/{kind}/batch", {kind: bodies}, f"{kind}:{digest}:{len(ids)}")
        if response.status_code in (200, 201):
            recorded = int(response.json().get("recorded", len(ids)))
            replayed = response.headers.get("Idempotency-Replayed") == "true"
            self.report.imported[kind] += 0 if replayed else recorded
            self.report.skipped[kind] += len(ids) if replayed else len(ids) - recorded
            return
        single = kind[:-1]
        for ident, body in zip(ids, bodies, strict=True):
            self._count(kind, await self._post(f"/{kind}", body, f"{single}:{ident}"), ident)


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


def _signal_body(s: SignalRecord) -> dict[str, Any]:
    return {
        "signal_id": s.signal_id,
        "market_id": s.market_id,
        "kind": s.kind,
        "source": s.source,
        "text": s.text,
        "sentiment": s.sentiment,
        "occurred_at": _iso(s.observed_at),
    }


@dataclass
class _Step:
    """A market's next writes: trades, then signals, that the feature service can take in that order (trades and
    signals travel on two topics, so the importer, not the event times, decides which arrives first)."""

    start: datetime
    trades: list[TradeRecord] = field(default_factory=list)
    signals: list[SignalRecord] = field(default_factory=list)


def market_steps(trades: list[TradeRecord], signals: list[SignalRecord], grace: timedelta = GRACE) -> list[_Step]:
    """A market's trades and signals in event-time order, cut into steps of (trades, then signals).

    The feature service applies an event in full only if it is at most `grace` older than the newest event of its
    market already applied; an older one counts in the totals only (a signal: not at all). Sending a market's
    trades in one batch and then its signals (as the importer once did) therefore dropped almost every signal from
    the sentiment features of the snapshots training reads. A step keeps every signal no more than `grace` older
    than any trade of the same step: a trade that would be later than that starts the next step."""
    events: list[tuple[datetime, int, TradeRecord | SignalRecord]] = [(t.executed_at, 0, t) for t in trades]
    events += [(s.observed_at, 1, s) for s in signals]
    events.sort(key=lambda e: (e[0], e[1]))
    steps: list[_Step] = []
    step: _Step | None = None
    for at, _, record in events:
        if isinstance(record, TradeRecord):
            if step is None or (step.signals and at - step.signals[0].observed_at > grace):
                step = _Step(at)
                steps.append(step)
            step.trades.append(record)
        else:
            if step is None:
                step = _Step(at)
                steps.append(step)
            step.signals.append(record)
    return steps


@dataclass
class _Market:
    record: MarketRecord
    steps: list[_Step]
    settlement: ResolutionRecord | None
    created: bool = False
    rejected: bool = False
    next_step: int = 0

    @property
    def events(self) -> int:
        return sum(len(s.trades) + len(s.signals) for s in self.steps)


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
    staleness: timedelta = STALENESS,
) -> ImportReport:
    """Replay the records through the write API in rounds that each send every market's next step.

    A round creates the markets that are due, sends the next step of every open market as one trades batch and
    then one signals batch of many markets (BATCH records a request), and closes and settles (in the background)
    the markets with nothing left. A market's step is due once every market resolved more than `staleness`
    before the step's first event has settled: the feature service's category features count the resolutions
    before each snapshot's time, and so see nearly all of them, as they would have live (none from the future;
    those of the last `staleness` may be missing). For 2,000 simulated markets this is about 4,000 rounds of two
    batch writes, instead of one request per signal."""
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
    group = [
        _Market(m, market_steps(trades.get(m.market_id, []), signals.get(m.market_id, [])), settled.get(m.market_id))
        for m in sorted(markets.values(), key=lambda m: (m.created_at, m.market_id))
        if m.market_id not in done
    ]
    loader = _Loader(client, report, api, source)
    gate = asyncio.Semaphore(concurrency)
    total = sum(1 + m.events + (m.settlement is not None) for m in group)
    bar = tqdm(total=total, unit="record", desc="import", disable=not progress)
    log = checkpoint.open("a") if checkpoint is not None else None

    def finished(m: _Market) -> None:
        if log is not None and not m.rejected:
            log.write(m.record.market_id + "\n")
            log.flush()

    async def create(m: _Market) -> None:
        async with gate:
            m.created = True
            if not await loader.create(m.record):
                m.rejected = True
                for kind, n in (
                    ("trades", sum(len(s.trades) for s in m.steps)),
                    ("signals", sum(len(s.signals) for s in m.steps)),
                ):
                    for _ in range(n):
                        report.rejected.add(kind, "its market was rejected", m.record.market_id)
            bar.update(1 + (m.events + (m.settlement is not None) if m.rejected else 0))

    async def settle(m: _Market) -> None:
        if m.settlement is not None and not m.rejected:
            async with gate:
                await loader.settle(m.record.market_id, m.settlement)
            bar.update()
        finished(m)

    async def sweep(group: list[_Market]) -> None:
        todo = {m.record.market_id: m for m in group}
        # the resolutions the category features count, in time order: a step waits for those before its start
        waits = sorted(
            (m.settlement.resolved_at, m.record.market_id)
            for m in group
            if m.settlement is not None and m.settlement.resolution != "CANCEL"
        )
        settling: dict[str, asyncio.Task[None]] = {}
        waited = 0
        while todo:
            while waited < len(waits) and waits[waited][1] not in todo:
                waited += 1
            horizon = waits[waited][0] + staleness if waited < len(waits) else None
            opening = [
                m for m in todo.values() if not m.created and (horizon is None or m.record.created_at <= horizon)
            ]
            await asyncio.gather(*(create(m) for m in opening))
            stepping = [
                m
                for m in todo.values()
                if m.created
                and not m.rejected
                and m.next_step < len(m.steps)
                and (horizon is None or m.steps[m.next_step].start <= horizon)
            ]
            for kind, batch in (
                ("trades", [t for m in stepping for t in m.steps[m.next_step].trades]),
                ("signals", [s for m in stepping for s in m.steps[m.next_step].signals]),
            ):
                for i in range(0, len(batch), BATCH):
                    await loader.batch(kind, batch[i : i + BATCH])  # type: ignore[arg-type]
                    bar.update(len(batch[i : i + BATCH]))
            for m in stepping:
                m.next_step += 1
            for m in [m for m in todo.values() if m.created and (m.rejected or m.next_step == len(m.steps))]:
                if m.record.market_id not in settling:
                    settling[m.record.market_id] = asyncio.create_task(settle(m))
            finished_now = [mid for mid, task in settling.items() if task.done()]
            for mid in finished_now:
                await settling.pop(mid)  # raises what the settlement raised
                todo.pop(mid)
            if not (opening or stepping or finished_now) and settling:
                await asyncio.wait(settling.values(), return_when=asyncio.FIRST_COMPLETED)
            elif not (opening or stepping or finished_now):
                raise AssertionError(f"import stalled with {len(todo)} markets to go")  # pragma: no cover

    try:
        await sweep(group)
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
    except CredentialRefused as exc:
        print(
            f"error: the platform at {url} refused the credential ({exc}); pass --api-key or set OM_API_KEY to a key"
            " with the admin or service role (`make up` saves one in .om/credentials/admin-api-key); rerun to resume"
        )
        return 1
    for line in report.lines():
        print(line)
    return 0
