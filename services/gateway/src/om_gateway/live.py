"""Live updates: channels, their history, and the clients subscribed to them — pure, no I/O.

Each update comes from a Kafka record, and its sequence number is that record's offset in its partition. A
channel's updates all come from one partition (the topics are keyed by the channel's id), so its numbers rise,
and every replica, reading the same log, gives the same update the same number: a client can resume on any
replica. An update is serialised once, into one WebSocket frame. Clients with the same channels form a group;
the updates of one read from Kafka are sent in a round, in which each group's frames are joined once and that one
byte string is written to each of its clients' sockets: one write per client per read, with no per-client
encoding, task or await. A client whose socket cannot take more gets the bytes in its queue instead, drained by its
sender as the socket allows; a client whose queue is full is not skipped silently: it is marked slow and
disconnected (close code 4008), and resumes from its last sequence number.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from om_contracts import MarketMetricsUpdated, PredictionMade, SystemMetricsUpdated

#: Close codes (documented in docs/websocket.md).
CLOSE_IDLE = 4000
CLOSE_UNAUTHENTICATED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_SLOW = 4008
CLOSE_TOO_MANY = 4029
CLOSE_TOO_BIG = 1009

CHANNEL = re.compile(r"^(system|system/health|market/[A-Za-z0-9_.:-]{1,64}(/predictions)?|user/[A-Za-z0-9_.:-]{1,64})$")

_ENVELOPE = {"event_id", "event_type", "schema_version", "produced_at", "producer", "occurred_at"}


def _stamp(event: Any) -> str:
    occurred: datetime = event.occurred_at
    return occurred.isoformat().replace("+00:00", "Z")


def analytics_update(event: SystemMetricsUpdated) -> dict[str, Any]:
    """The product's `analytics_update` message (channel `system`)."""
    return {
        "type": "analytics_update",
        "timestamp": _stamp(event),
        "system_metrics": event.system_metrics.model_dump(mode="json"),
        "top_markets": [m.model_dump(mode="json") for m in event.top_markets],
    }


def market_update(event: MarketMetricsUpdated) -> dict[str, Any]:
    """Channel `market/{id}`."""
    return {
        "type": "market_update",
        "timestamp": _stamp(event),
        "market": event.model_dump(mode="json", exclude=_ENVELOPE),
    }


def prediction_update(event: PredictionMade) -> dict[str, Any]:
    """Channel `market/{id}/predictions`."""
    return {
        "type": "prediction_update",
        "timestamp": _stamp(event),
        "prediction": event.model_dump(mode="json", exclude=_ENVELOPE - {"occurred_at"}),
    }


def generic_update(kind: str) -> Callable[[Any], dict[str, Any]]:
    """For topics added later (user and health metrics): the event's fields without the envelope."""

    def build(event: Any) -> dict[str, Any]:
        return {"type": kind, "timestamp": _stamp(event), "data": event.model_dump(mode="json", exclude=_ENVELOPE)}

    return build


@dataclass(frozen=True)
class Source:
    """How a topic's events become channel updates."""

    topic: str
    channel: Callable[[Any], str]
    message: Callable[[Any], dict[str, Any]]


SOURCES: tuple[Source, ...] = (
    Source("analytics.system.v1", lambda e: "system", analytics_update),
    Source("analytics.market.v1", lambda e: f"market/{e.market_id}", market_update),
    Source("prediction.predictions.v1", lambda e: f"market/{e.market_id}/predictions", prediction_update),
    Source("analytics.health.v1", lambda e: "system/health", generic_update("health_update")),
    Source("analytics.user.v1", lambda e: f"user/{e.user_id}", generic_update("user_update")),
)


def frame(text: str) -> bytes:
    """`text` as one complete, unmasked WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def texts_of(data: bytes) -> list[str]:
    """The texts of frames built by `frame`, joined."""
    texts, at = [], 0
    while at < len(data):
        size, head = data[at + 1], 2
        if size == 126:
            size, head = int.from_bytes(data[at + 2 : at + 4]), 4
        elif size == 127:
            size, head = int.from_bytes(data[at + 2 : at + 10]), 10
        texts.append(data[at + head : at + head + size].decode())
        at += head + size
    return texts


class Socket(Protocol):
    """Where a client's frames go directly: its connection's transport."""

    def can_write(self) -> bool:
        """True while the socket takes more without blocking (and is not closing)."""

    def write(self, data: bytes) -> None: ...


@dataclass(eq=False)
class Client:
    """One connection: its principal, channels and, while its socket is busy, a queue of shared frames."""

    client_id: str
    max_queue: int
    principal: Any = None
    #: Its number on this replica (which heartbeat slot it is in).
    serial: int = 0
    channels: set[str] = field(default_factory=set)
    #: What waits for the socket (or everything, without a direct socket), drained by the connection's sender:
    #: (frames joined, how many), as they were offered.
    queue: deque[tuple[bytes, int]] = field(default_factory=deque)
    #: Messages in the queue (the bound is on messages, not on writes).
    queued: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    slow: bool = False
    last_heard: float = 0.0
    #: Connected on the product's original endpoint: `analytics_update` exactly as it always was (no seq).
    legacy: bool = False
    #: Written to directly when set and idle; None queues everything for the sender (any ASGI server).
    socket: Socket | None = None
    #: The clients with exactly these channels on this endpoint (None without channels).
    group: Group | None = None

    def offer(self, data: bytes, count: int = 1) -> bool:
        """Send `count` frames (joined in `data`) now if the socket takes them, else queue them; False (and marked
        slow) if the client is too far behind to take them."""
        if self.slow:
            return False
        socket = self.socket
        if not self.queue and socket is not None and socket.can_write():
            socket.write(data)  # the hot path: no task, no await, nothing encoded
            return True
        if self.queued + count > self.max_queue:
            self.slow = True
            self.queue.clear()
            self.queued = 0
            self.ready.set()  # wake the sender, which closes the connection
            return False
        self.queue.append((data, count))
        self.queued += count
        self.ready.set()
        return True

    def take(self) -> bytes:
        """The oldest queued write (for the sender)."""
        data, count = self.queue.popleft()
        self.queued -= count
        return data

    def reply(self, message: dict[str, Any]) -> None:
        self.offer(frame(_json(message)))

    def drain(self) -> list[dict[str, Any]]:
        """Everything queued, decoded (for tests and diagnostics)."""
        out = [json.loads(text) for data, _ in self.queue for text in texts_of(data)]
        self.queue.clear()
        self.queued = 0
        return out


@dataclass(eq=False)
class Group:
    """The clients with the same channels on the same endpoint: a round joins their frames once for all of them."""

    channels: frozenset[str]
    legacy: bool
    #: In the order they joined (a dict as an ordered set).
    clients: dict[Client, None] = field(default_factory=dict)


@dataclass
class History:
    """A channel's latest updates, oldest first, as (seq, text)."""

    updates: deque[tuple[int, str]]
    trimmed_through: int = -1  # the highest seq no longer kept
    legacy_latest: bytes | None = None  # the latest update's frame in the original shape (channel `system` only)


#: (client, frames joined, how many) for each client a round writes to.
Delivery = tuple["Client", bytes, int]
#: Writes a share of a round's deliveries elsewhere (another thread) while the event loop writes the rest; returns
#: a callable that waits for it to finish and gives back the deliveries it left to the event loop.
Splitter = Callable[[list[Delivery]], Callable[[], list[Delivery]]]


class LiveHub:
    def __init__(
        self, queue_size: int, backfill: int = 100, splitter: Splitter | None = None, split_from: int = 1000
    ) -> None:
        self.queue_size = queue_size
        self.backfill = backfill
        #: With a splitter, a round with at least `split_from` clients to write hands half of them to it.
        self.splitter = splitter
        self.split_from = split_from
        self.clients: set[Client] = set()
        self.subscribers: dict[str, set[Client]] = {}
        #: Clients by (channels, legacy), and each channel's groups: a round's work per client is one write.
        self.groups: dict[tuple[frozenset[str], bool], Group] = {}
        self.groups_of: dict[str, list[Group]] = {}
        self.history: dict[str, History] = {}
        #: (topic, partition) → the first offset this replica read; a resume from before it cannot be complete.
        self.read_from: dict[tuple[str, int], int] = {}
        self.partition_of: dict[str, tuple[str, int]] = {}
        self._serials = itertools.count()
        #: The current round's updates, in order: (channel, frame, frame in the original shape or None).
        self._round: list[tuple[str, bytes, bytes | None]] | None = None

    # --- connections -------------------------------------------------------------------------------

    def connect(self, client_id: str, principal: Any = None) -> Client:
        client = Client(client_id, self.queue_size, principal, serial=next(self._serials))
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        for channel in client.channels:
            if (subs := self.subscribers.get(channel)) is not None:
                subs.discard(client)
                if not subs:
                    del self.subscribers[channel]
        client.channels.clear()
        self._regroup(client)

    def _regroup(self, client: Client) -> None:
        """Move the client to the group of its current channels."""
        key = (frozenset(client.channels), client.legacy)
        old = client.group
        if old is not None:
            if (old.channels, old.legacy) == key:
                return
            del old.clients[client]
            if not old.clients:
                del self.groups[(old.channels, old.legacy)]
                for channel in old.channels:
                    self.groups_of[channel].remove(old)
                    if not self.groups_of[channel]:
                        del self.groups_of[channel]
        client.group = None
        if not client.channels:
            return
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(*key)
            for channel in group.channels:
                self.groups_of.setdefault(channel, []).append(group)
        group.clients[client] = None
        client.group = group

    def subscribe(self, client: Client, channel: str, since: int | None = None) -> None:
        """Add the channel, then queue a snapshot (the latest update) or, with `since`, the updates after it."""
        client.channels.add(channel)
        self.subscribers.setdefault(channel, set()).add(client)
        self._regroup(client)
        history = self.history.get(channel)
        if client.legacy and channel == "system":
            if history is not None and history.legacy_latest is not None:
                client.offer(history.legacy_latest)  # as before: the current state at once, nothing else
            return
        if since is not None:
            complete = self.can_resume(channel, since)
            texts = [t for seq, t in history.updates if seq > since] if history else []
            if complete:
                client.reply({"type": "backfill", "channel": channel, "since": since, "count": len(texts)})
                for text in texts:
                    client.offer(frame(text))
                return
        latest = history.updates[-1] if history and history.updates else None
        seq = latest[0] if latest else None
        head = _json({"type": "snapshot", "channel": channel, "seq": seq, "reset": since is not None})
        client.offer(frame(head[:-1] + ',"message":' + (latest[1] if latest else "null") + "}"))  # no re-encoding

    def can_resume(self, channel: str, since: int) -> bool:
        history = self.history.get(channel)
        if history is not None and since < history.trimmed_through:
            return False
        where = self.partition_of.get(channel)
        if where is None:  # nothing read for this channel: complete only if this replica read its topic at all
            return False
        return since >= self.read_from.get(where, 0) - 1

    def unsubscribe(self, client: Client, channel: str) -> None:
        client.channels.discard(channel)
        if (subs := self.subscribers.get(channel)) is not None:
            subs.discard(client)
            if not subs:
                del self.subscribers[channel]
        self._regroup(client)

    # --- updates -----------------------------------------------------------------------------------

    def publish(self, source: Source, event: Any, partition: int, offset: int) -> int:
        """Number, encode once, remember and fan out one update; returns how many clients it was offered to."""
        channel = source.channel(event)
        history = self.history.get(channel)
        if history is None:
            history = self.history[channel] = History(deque())
            self.partition_of[channel] = (source.topic, partition)
        if history.updates and offset <= history.updates[-1][0]:
            return 0  # already seen (a consumer restart re-reads): never twice
        message = source.message(event)
        legacy = frame(_json(message)) if channel == "system" else None
        message["channel"] = channel
        message["seq"] = offset
        text = _json(message)
        history.updates.append((offset, text))
        history.legacy_latest = legacy
        if len(history.updates) > self.backfill:
            history.trimmed_through = history.updates.popleft()[0]
        if self._round is not None:  # within a round: each client's updates are written together at its end
            self._round.append((channel, frame(text), legacy))
        else:
            self._round = [(channel, frame(text), legacy)]
            self.flush()
        return len(self.subscribers.get(channel, ()))

    def gather(self) -> None:
        """Start a round: until `flush`, `publish` collects the updates instead of sending them, so a client that
        gets several updates of one read (its market's and the system's) gets them in one write — one system call
        instead of several, which is most of a send's cost. The caller must not await in between."""
        self._round = []

    def flush(self) -> None:
        """End the round: per group, join its clients' frames in order once, and write that to each of them."""
        updates, self._round = self._round or [], None
        frames_of: dict[Group, list[bytes]] = {}
        for channel, data, legacy in updates:
            for group in self.groups_of.get(channel, ()):
                sent = legacy if legacy is not None and group.legacy else data
                if (frames := frames_of.get(group)) is None:
                    frames_of[group] = [sent]
                else:
                    frames.append(sent)
        if self.splitter is not None and sum(len(g.clients) for g in frames_of) >= self.split_from:
            joined = [
                (group, frames[0] if len(frames) == 1 else b"".join(frames), len(frames))
                for group, frames in frames_of.items()
            ]
            self.flush_deliveries([(client, data, count) for group, data, count in joined for client in group.clients])
            return
        for group, frames in frames_of.items():
            count = len(frames)
            data = frames[0] if count == 1 else b"".join(frames)
            for client in group.clients:
                client.offer(data, count)

    def flush_deliveries(self, deliveries: list[Delivery]) -> None:
        """Offer each client its bytes; from `split_from` clients with a splitter, every other one is handed to it
        and the rest written here meanwhile, then what it left. Nothing else runs on the event loop until it has
        finished, so no other write reaches those clients meanwhile and each client's bytes stay in order."""
        if self.splitter is None or len(deliveries) < self.split_from:
            for client, data, count in deliveries:
                client.offer(data, count)
            return
        wait = self.splitter(deliveries[1::2])
        try:
            for client, data, count in deliveries[::2]:
                client.offer(data, count)
        finally:
            for client, data, count in wait():
                client.offer(data, count)

    def heartbeat(self, now: float, stamp: str, idle_timeout_s: float, slot: int = 0, slots: int = 1) -> list[Client]:
        """Send a heartbeat to the clients of one slot of `slots` (everyone by default); return those of them silent
        for longer than the idle timeout. In slots, so that 10,000 heartbeats are not one long write round that
        the updates arriving meanwhile wait behind."""
        data = frame(_json({"type": "heartbeat", "timestamp": stamp}))
        idle = []
        for client in self.clients:
            if client.serial % slots != slot:
                continue
            if now - client.last_heard > idle_timeout_s:
                idle.append(client)
            else:
                client.offer(data)
        return idle


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
