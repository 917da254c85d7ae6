"""Raw upstream intake: records producers write straight to `ingest.raw-markets.v1`, `ingest.raw-trades.v1` and
`ingest.raw-signals.v1`, recorded through the same use cases (rules, idempotent ids, outbox) as the HTTP writes.

Each fetched batch is one transaction: markets first, then all trades in one set-based `record_trades` call, then
signals; the consumed offsets are saved in that same transaction, so a redelivered batch is neither lost nor
counted twice. A record that is not valid (undecodable, or refused by the rules: unknown market, closed market,
event time too far ahead, an id reused with other fields) goes to the dead-letter topic with the reason and its
original bytes, in the same transaction, and the rest of the batch is recorded. Markets and trades travel on
different topics: a trade read before its market exists is dead-lettered (replay it once the market is there).
"""

from __future__ import annotations

from collections.abc import Mapping

from om_contracts import utcnow
from om_contracts.topics import RAW_MARKETS, RAW_SIGNALS, RAW_TRADES
from om_ingest.commands import Ingest
from om_ingest.domain import DomainError
from om_runtime.kafka import Delivery, EventPublisher
from om_runtime.offsets import Partition, save_offsets

RAW_TOPICS = (RAW_MARKETS, RAW_TRADES, RAW_SIGNALS)


def _reason(delivery: Delivery, exc: DomainError) -> str:
    field = f"{exc.field}: " if exc.field else ""
    return (
        f"{delivery.topic.name} record refused by ingest ({exc.status_code} {type(exc).__name__}): {field}{exc.message}"
    )


class RawIntake:
    """The batch processor for the raw topics (`ServiceRuntime.consume_stateful`)."""

    def __init__(self, ingest: Ingest, publisher: EventPublisher, *, consumer: str) -> None:
        self.ingest = ingest
        self.publisher = publisher
        self.consumer = consumer

    async def __call__(self, deliveries: list[Delivery]) -> None:
        now = utcnow()
        rejected: list[tuple[Delivery, DomainError]] = []
        markets = [d for d in deliveries if d.topic is RAW_MARKETS]
        trades = [d for d in deliveries if d.topic is RAW_TRADES]
        signals = [d for d in deliveries if d.topic is RAW_SIGNALS]
        async with self.ingest.db.transaction() as conn, self.publisher.confirmed_together():
            for d in markets:
                try:
                    await self.ingest.create_market(conn, d.event, now, replay_same=True)
                except DomainError as exc:
                    rejected.append((d, exc))
            if trades:
                result = await self.ingest.record_trades(conn, [d.event for d in trades], now, partial=True)
                rejected.extend((trades[index], exc) for index, exc in result.rejected)
            for d in signals:
                try:
                    await self.ingest.record_signal(conn, d.event, now)
                except DomainError as exc:
                    rejected.append((d, exc))
            for d, refusal in rejected:
                await self.publisher.dead_letter(self.consumer, d.record, d.record.value or b"", _reason(d, refusal))
            await save_offsets(conn, self.consumer, _next_offsets(deliveries))


def _next_offsets(deliveries: list[Delivery]) -> Mapping[Partition, int]:
    offsets: dict[Partition, int] = {}
    for d in deliveries:
        part = (d.topic.name, d.partition)
        offsets[part] = max(offsets.get(part, 0), d.offset + 1)
    return offsets
