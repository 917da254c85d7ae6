"""The WebSocket endpoint, as plain ASGI (no middleware on the send path: a send is one `websocket.send` of
text encoded once per update). Protocol in docs/websocket.md: authenticate (token in the URL or a first `auth`
message), then `subscribe` / `unsubscribe` / `ping`, each acknowledged with its `id`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter as Tally
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge

from om_gateway.access import allowed
from om_gateway.auth import Authenticator, Principal, Unauthenticated
from om_gateway.live import (
    CHANNEL,
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
    Client,
    LiveHub,
)

log = logging.getLogger(__name__)

LEGACY_PREFIX = "/api/v1/ai-analytics/ws/analytics/"
PATH = "/api/v1/ws"
MAX_CHANNELS = 200


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
        channels = message.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise BadMessage("channels must be a list of channel names")
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


class LiveEndpoint:
    """Serves WebSocket connections on `/api/v1/ws` and the product's `/api/v1/ai-analytics/ws/analytics/{id}`
    (which is subscribed to `system` at once, as before)."""

    def __init__(self, hub: LiveHub, auth: Authenticator, settings: Any, registry: CollectorRegistry) -> None:
        self.hub = hub
        self.auth = auth
        self.settings = settings
        self.per_principal: Tally[str] = Tally()
        self.connections = Gauge("gateway_ws_connections", "Open WebSocket connections", registry=registry)
        self.closes = Counter("gateway_ws_closes", "WebSocket closes by code", ["code"], registry=registry)

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
        principal = await self._authenticate(token, receive, send)
        if principal is None:
            return
        key = principal.rate_key
        if self.per_principal[key] >= self.settings.ws_max_connections_per_principal:
            await self._close(send, CLOSE_TOO_MANY, "too many connections for this credential")
            return
        self.per_principal[key] += 1
        self.connections.inc()
        client = self.hub.connect(client_id, principal)
        client.last_heard = time.monotonic()
        client.legacy = legacy
        if legacy:
            self.hub.subscribe(client, "system")
        sender = asyncio.create_task(self._send(client, send))
        try:
            await self._read(client, receive, send, sender)
        finally:
            self.hub.disconnect(client)
            self.per_principal[key] -= 1
            if not self.per_principal[key]:
                del self.per_principal[key]
            self.connections.dec()
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

    async def _read(self, client: Client, receive: Any, send: Any, sender: asyncio.Task[None]) -> None:
        limit = self.settings.ws_max_message_bytes
        while True:
            getting = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({getting, sender}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:  # the sender ended: slow or idle client, or a broken socket
                getting.cancel()
                return
            message = getting.result()
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

    async def _send(self, client: Client, send: Any) -> None:
        queue = client.queue
        while True:
            await client.ready.wait()
            client.ready.clear()
            if client.slow:
                await self._close(send, CLOSE_SLOW, "too slow: resume from your last seq")
                return
            if client.principal is None:  # closed as idle
                await self._close(send, CLOSE_IDLE, "idle")
                return
            while queue:
                await send({"type": "websocket.send", "text": queue.popleft()})

    async def _close(self, send: Any, code: int, reason: str) -> None:
        self.closes.labels(str(code)).inc()
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code, "reason": reason[:120]})

    async def heartbeats(self) -> None:
        """Every `ws_heartbeat_s`: a heartbeat to everyone; clients idle too long are closed (code 4000)."""
        while True:
            await asyncio.sleep(self.settings.ws_heartbeat_s)
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for client in self.hub.heartbeat(time.monotonic(), stamp, self.settings.ws_idle_timeout_s):
                client.principal = None
                client.ready.set()


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), None)
