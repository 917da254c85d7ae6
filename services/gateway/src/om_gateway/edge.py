"""Plain ASGI middleware at the gateway's edge (plain ASGI: no per-request objects when nothing is wrong):
security headers, the request body limit, access to the operational endpoints, and counts of refusals."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from om_gateway.access import allowed
from om_gateway.auth import Authenticator, Unauthenticated
from om_gateway.problems import MEDIA_TYPE, problem_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: No inline script or style anywhere: the dashboard's JS and CSS are static files.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


async def send_problem(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = problem_bytes(status, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds the security headers and a CSP to every HTTP response (a page may set its own CSP first)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    return await send_problem(send, 400, "Content-Length is not a number")
                if int(value) > self.max_bytes:
                    return await send_problem(send, 413, f"request body over {self.max_bytes} bytes")
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                await send_problem(send, 413, f"request body over {self.max_bytes} bytes")


class RefusalCounter:
    """Counts 401, 403 and 429 responses (`gateway_refusals_total{status}` at /metrics)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.counter = _refusals(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403, 429):
                self.counter.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting)


_COUNTERS: dict[int, Counter] = {}


def _refusals(registry: CollectorRegistry) -> Counter:
    if id(registry) not in _COUNTERS:
        _COUNTERS[id(registry)] = Counter(
            "gateway_refusals", "Requests refused: 401, 403, 429", ["status"], registry=registry
        )
    return _COUNTERS[id(registry)]


OPS_PATHS = {"/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


class OpsGuard:
    """`/metrics` and the API docs need an admin or service credential (unless made public); `/ready` answers
    everyone with its status but shows the dependency detail only to them."""

    def __init__(
        self, app: ASGIApp, auth: Authenticator, *, public_docs: bool = False, public_metrics: bool = False
    ) -> None:
        self.app = app
        self.auth = auth
        self.public = {"/metrics"} if public_metrics else set()
        if public_docs:
            self.public |= OPS_PATHS - {"/metrics"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path not in OPS_PATHS and path != "/ready") or path in self.public:
            return await self.app(scope, receive, send)
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
        may = False
        refusal: tuple[int, str] | None = None
        try:
            principal = await self.auth.authenticate(authorization)
            may = allowed("operations:read", principal.role)
            if not may:
                refusal = (403, f"role {principal.role} may not read operational endpoints")
        except Unauthenticated as exc:
            refusal = (401, str(exc))
        if path != "/ready":
            if refusal is not None:
                status, detail = refusal
                extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
                return await send_problem(send, status, detail, extra)
            return await self.app(scope, receive, send)
        if may:
            return await self.app(scope, receive, send)
        await self._ready_without_detail(scope, receive, send)

    async def _ready_without_detail(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        try:
            status_text = json.loads(b"".join(chunks))["status"]
        except (ValueError, KeyError, TypeError):
            status_text = "unknown"
        body = json.dumps({"status": status_text}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": start.get("status", 503),
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
