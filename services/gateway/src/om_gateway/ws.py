"""The WebSocket endpoint, as plain ASGI (no middleware on the send path). Protocol in docs/websocket.md:
authenticate (token in the URL or a first `auth` message), then `subscribe` / `unsubscribe` / `ping`, each
acknowledged with its `id`.

Updates are written as frames built once per update straight to each connection's transport when uvicorn's
sans-I/O WebSocket protocol serves it (`DirectSocket`): fan-out to 10,000 clients is then a loop of
`transport.write` calls, with no per-client task, await or encoding. Under any other server every frame goes
through the connection's sender and ASGI `websocket.send`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from om_gateway.access import allowed
from om_gateway.auth import Authenticator, Principal, Unauthenticated
from om_gateway.heap import Freezer
from om_gateway.live import (
    CHANNEL,
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
    Client,
    Delivery,
    LiveHub,
    texts_of,
)

log = logging.getLogger(__name__)

LEGACY_PREFIX = "/api/v1/ai-analytics/ws/analytics/"
PATH = "/api/v1/ws"
MAX_CHANNELS = 200
CLOSE_TIMEOUT_S = 10.0
#: Heartbeats go out to one slot of the clients at a time (see LiveHub.heartbeat).
HEARTBEAT_SLOTS = 15
#: The reader's cancellation message when its connection's sender ended.
SENDER_ENDED = "the connection's sender ended"


class BadMessage(ValueError):
    pass


def handle(hub: LiveHub, client: Client, text: str) -> None:
    """Apply one client message; every outcome is answered (ack, pong or error with the request's id)."""
    request_id: Any = None
    try:
        message = json.loads(text)
        if not isinstance(message, dict):
            raise BadMessage("a message is a JSON object")
        request_id = message.get("id")
        kind = message.get("type")
        if kind == "ping":
            client.reply({"type": "pong"} | ({"id": request_id} if request_id is not None else {}))
        elif kind in ("subscribe", "unsubscribe"):
            channels = _channels(message)
            if kind == "unsubscribe":
                for channel in channels:
                    hub.unsubscribe(client, channel)
                client.reply({"type": "ack", "id": request_id, "op": kind, "channels": channels})
                return
            refused = [c for c in channels if not _may_read(client.principal, c)]
            if refused:
                client.reply(
                    {"type": "error", "id": request_id, "code": "forbidden", "detail": f"not allowed: {refused}"}
                )
                return
            if len(client.channels | set(channels)) > MAX_CHANNELS:
                raise BadMessage(f"at most {MAX_CHANNELS} channels per connection")
            since = _since(message, channels)
            client.reply({"type": "ack", "id": request_id, "op": kind, "channels": channels})
            for channel in channels:
                hub.subscribe(client, channel, since.get(channel))
        else:
            raise BadMessage(f"unknown message type {kind!r}")
    except (ValueError, TypeError) as exc:
        client.reply({"type": "error", "id": request_id, "code": "bad-request", "detail": f"bad message: {exc}"})


def _channels(message: dict[str, Any]) -> list[str]:
    if "market_ids" in message and "channels" not in message:  # the first protocol's form
        ids = message["market_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise BadMessage("market_ids must be a list of market ids")
        channels = [f"market/{i}" for i in ids]
    else:
        requested = message.get("channels")
        if not isinstance(requested, list) or not all(isinstance(c, str) for c in requested):
            raise BadMessage("channels must be a list of channel names")
        channels = list(requested)
    bad = [c for c in channels if not CHANNEL.match(c)]
    if bad:
        raise BadMessage(f"unknown channel(s) {bad}")
    return list(dict.fromkeys(channels))


def _since(message: dict[str, Any], channels: list[str]) -> dict[str, int]:
    since = message.get("since", {})
    if isinstance(since, int) and not isinstance(since, bool):
        return dict.fromkeys(channels, since)
    if not isinstance(since, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in since.values()):
        raise BadMessage("since is a sequence number or {channel: sequence number}")
    return {c: v for c, v in since.items() if c in channels}


def _may_read(principal: Principal | None, channel: str) -> bool:
    if principal is None:
        return False
    if channel.startswith("user/"):
        return allowed("users:read", principal.role, subject=principal.subject, owner=channel[5:])
    return allowed("live:connect", principal.role)


class DirectSocket:
    """A uvicorn sans-I/O WebSocket connection's transport, written to with complete frames. Safe beside the
    protocol's own writes: every write is a whole frame, on the one event loop; an unmasked, uncompressed text
    frame is valid whatever extensions were negotiated (RFC 7692 §6)."""

    __slots__ = ("_protocol", "buffered", "fd", "write")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        transport = protocol.transport
        self.write = transport.write
        self.buffered = transport.get_write_buffer_size
        self.fd: int = transport.get_extra_info("socket").fileno()

    @classmethod
    def of(cls, send: Any) -> DirectSocket | None:
        """The socket behind an ASGI `send`, if uvicorn's sans-I/O protocol serves the connection."""
        protocol = getattr(send, "__self__", None)
        return cls(protocol) if isinstance(protocol, WebSocketsSansIOProtocol) else None

    def can_write(self) -> bool:
        protocol = self._protocol  # (a transport is closing as soon as a write failed or it was lost)
        return protocol.writable.is_set() and not protocol.close_sent and not protocol.transport.is_closing()

    def closing(self) -> bool:
        return self._protocol.close_sent or self._protocol.transport.is_closing()

    async def writable(self) -> None:
        await self._protocol.writable.wait()


class SendThread:
    """Writes every other client of a large round from a second thread while the event loop writes the rest.
    Sending is mostly the kernel's work, done with the GIL released, so the two overlap: on a loaded machine the
    gateway also gets a second share of the CPU for it. The thread takes only the plain case: a client with
    nothing queued whose socket takes the whole write at once (`os.write` on its descriptor; its transport's
    buffer is empty, and nothing else writes to it until the round ends). Anything else (a queue, a busy socket, a
    partial write, an error) is given back to the event loop, which writes it after the thread has finished,
    in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ws-send")

    def __call__(self, deliveries: list[Delivery]) -> Callable[[], list[Delivery]]:
        return self._pool.submit(_write_plain, deliveries).result


def _write_plain(deliveries: list[Delivery]) -> list[Delivery]:
    left = []
    for delivery in deliveries:
        client, data, count = delivery
        socket = client.socket
        if client.slow:
            continue  # (as Client.offer: closing)
        if client.queue or not isinstance(socket, DirectSocket) or not socket.can_write() or socket.buffered():
            left.append(delivery)
            continue
        try:
            sent = os.write(socket.fd, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the transport meets the error on the event loop's write, and closes
            left.append(delivery)
            continue
        if sent < len(data):
            left.append((client, data[sent:], count))
    return left


class LiveEndpoint:
    """Serves WebSocket connections on `/api/v1/ws` and the product's `/api/v1/ai-analytics/ws/analytics/{id}`
    (which is subscribed to `system` at once, as before)."""

    def __init__(self, hub: LiveHub, auth: Authenticator, settings: Any, registry: CollectorRegistry) -> None:
        self.hub = hub
        self.auth = auth
        self.settings = settings
        self.per_principal: Tally[str] = Tally()
        self.per_ip: Tally[str] = Tally()
        self.open = 0
        self.freezer = Freezer(settings.ws_gc_freeze, settings.ws_gc_full_every_s)
        self.connections = Gauge("gateway_ws_connections", "Open WebSocket connections", registry=registry)
        self.closes = Counter("gateway_ws_closes", "WebSocket closes by code", ["code"], registry=registry)
        Gauge(
            "gateway_ws_gc_full_collections",
            "Full garbage collections of the frozen heap (om_gateway.heap), since start",
            registry=registry,
        ).set_function(lambda: self.freezer.full_collections)
        Gauge(
            "gateway_ws_gc_full_collection_seconds",
            "Time the event loop spent in those collections, in all",
            registry=registry,
        ).set_function(lambda: self.freezer.full_collection_s)
        Gauge(
            "gateway_ws_gc_full_collection_cpu_seconds",
            "CPU time of those collections, in all (less than their time on a machine short of CPU)",
            registry=registry,
        ).set_function(lambda: self.freezer.full_collection_cpu_s)

    def serves(self, path: str) -> bool:
        return path == PATH or (path.startswith(LEGACY_PREFIX) and len(path) > len(LEGACY_PREFIX))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        path = scope["path"]
        if not self.serves(path):
            await send({"type": "websocket.close", "code": 1008, "reason": "no WebSocket here"})
            return
        legacy = path != PATH
        client_id = path[len(LEGACY_PREFIX) :] if legacy else ""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or query.get("api_key") or [None])[0]
        token = token or _header(scope, b"authorization")
        await send({"type": "websocket.accept"})
        ip = (scope.get("client") or ("unknown",))[0]
        if self.per_ip[ip] >= self.settings.ws_max_connections_per_ip:
            await self._close(send, CLOSE_TOO_MANY, "too many connections from this IP address")
            return
        self.per_ip[ip] += 1
        try:
            await self._serve(client_id, legacy, token, receive, send)
        finally:
            _release(self.per_ip, ip)

    async def _serve(self, client_id: str, legacy: bool, token: str | None, receive: Any, send: Any) -> None:
        principal = await self._authenticate(token, receive, send)
        if principal is None:
            return
        key = principal.rate_key
        if self.per_principal[key] >= self.settings.ws_max_connections_per_principal:
            await self._close(send, CLOSE_TOO_MANY, "too many connections for this credential")
            return
        self.per_principal[key] += 1
        self.connections.inc()
        self.open += 1
        self.freezer.opened(self.open)
        client = self.hub.connect(client_id, principal)
        client.last_heard = time.monotonic()
        client.legacy = legacy
        client.socket = socket = DirectSocket.of(send)
        if legacy:
            self.hub.subscribe(client, "system")
        # The reader awaits `receive` directly, with no task or wait per message (10,000 clients' pings at once
        # were a long stall of the event loop); when the sender ends (slow or idle client, broken socket) it cancels
        # the reader instead.
        reader = asyncio.current_task()
        assert reader is not None
        sender = asyncio.create_task(self._send(client, send, socket))
        reading = True

        def sender_ended(_: asyncio.Task[None]) -> None:
            if reading:  # (not once the reader has ended by itself: the callback runs later than the sender ends)
                reader.cancel(SENDER_ENDED)

        sender.add_done_callback(sender_ended)
        try:
            await self._read(client, receive, send)
        except asyncio.CancelledError:
            if not (sender.done() and reader.cancelling() == 1):
                raise  # cancelled from outside (e.g. the server is stopping)
            reader.uncancel()
        finally:
            reading = False
            self.hub.disconnect(client)
            _release(self.per_principal, key)
            self.connections.dec()
            self.open -= 1
            self.freezer.closed_one(self.open)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _authenticate(self, token: str | None, receive: Any, send: Any) -> Principal | None:
        try:
            if token is None:  # the first message must be {"type": "auth", "token": ...}
                message = await asyncio.wait_for(receive(), self.settings.ws_auth_timeout_s)
                text = message.get("text") or (message.get("bytes") or b"").decode(errors="replace")
                if message["type"] != "websocket.receive" or len(text) > 8192:
                    raise Unauthenticated('send {"type": "auth", "token": ...} first')
                try:
                    first = json.loads(text)
                    token = first["token"] if first.get("type") == "auth" else None
                except (ValueError, KeyError, TypeError, AttributeError):
                    token = None
                if not isinstance(token, str):
                    raise Unauthenticated('send {"type": "auth", "token": ...} first')
            principal = await self.auth.authenticate(token if " " in token else f"Bearer {token}")
        except (Unauthenticated, TimeoutError) as exc:
            await self._close(send, CLOSE_UNAUTHENTICATED, str(exc)[:120] or "authentication timed out")
            return None
        if not allowed("live:connect", principal.role):
            await self._close(send, CLOSE_FORBIDDEN, "not allowed")
            return None
        await send({"type": "websocket.send", "text": json.dumps({"type": "welcome", "role": principal.role})})
        return principal

    async def _read(self, client: Client, receive: Any, send: Any) -> None:
        limit = self.settings.ws_max_message_bytes
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            client.last_heard = time.monotonic()
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode(errors="replace")
            if len(text) > limit:
                await self._close(send, CLOSE_TOO_BIG, f"messages are limited to {limit} bytes")
                return
            handle(self.hub, client, text)

    async def _send(self, client: Client, send: Any, socket: DirectSocket | None) -> None:
        """Closes the connection when the hub says so (slow or idle), and sends what the socket could not take at
        once, in order: while the queue is not empty, new frames join it rather than overtake it."""
        queue = client.queue
        while True:
            if client.slow:
                await self._close(send, CLOSE_SLOW, "too slow: resume from your last seq")
                return
            if client.principal is None:  # closed as idle
                await self._close(send, CLOSE_IDLE, "idle")
                return
            if not queue:
                client.ready.clear()
                await client.ready.wait()
            elif socket is None:
                for text in texts_of(client.take()):
                    await send({"type": "websocket.send", "text": text})
            elif socket.can_write():
                socket.write(client.take())
            elif socket.closing():
                return  # the reader ends the connection
            else:  # wait for the socket to drain, or for the hub to close this client
                client.ready.clear()
                await _first(socket.writable(), client.ready.wait())

    async def _close(self, send: Any, code: int, reason: str) -> None:
        self.closes.labels(str(code)).inc()
        # Bounded: a client too slow to read its updates may not read the close either.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await send({"type": "websocket.close", "code": code, "reason": reason[:120]})

    async def heartbeats(self) -> None:
        """Every `ws_heartbeat_s`: a heartbeat to everyone, one slot of clients at a time, spread over the interval;
        clients idle too long are closed (code 4000)."""
        slot = 0
        while True:
            await asyncio.sleep(self.settings.ws_heartbeat_s / HEARTBEAT_SLOTS)
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            now = time.monotonic()
            for client in self.hub.heartbeat(now, stamp, self.settings.ws_idle_timeout_s, slot, HEARTBEAT_SLOTS):
                client.principal = None
                client.ready.set()
            slot = (slot + 1) % HEARTBEAT_SLOTS
            if slot == 0:
                self.freezer.tick(self.open)


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until one of `waits` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _release(counts: Tally[str], key: str) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), None)
