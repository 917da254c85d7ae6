"""Calls to the internal APIs of the services that own the data. Successful answers pass through unchanged;
errors become problems (RFC 9457): an upstream's 4xx keeps its status and detail, an unreachable service is a
503 with Retry-After naming it, a slow one a 504, a failing one a 502. No upstream is a readiness condition of
the gateway: while one is down, only its routes answer 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from fastapi import Response
from opentelemetry import propagate

from om_gateway.problems import field_errors, problem

log = logging.getLogger(__name__)

#: Request headers passed on to the owning service.
FORWARDED_HEADERS = ("idempotency-key",)


class Upstreams:
    def __init__(
        self,
        urls: dict[str, str],
        timeout_s: float,
        *,
        retry_after_s: int = 5,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self.urls = urls
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.transports = dict(transports or {})
        self.clients: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Upstreams]:
        async with contextlib.AsyncExitStack() as stack:
            for name, url in self.urls.items():
                self.clients[name] = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, timeout=self.timeout_s, transport=self.transports.get(name))
                )
            yield self

    async def status(self) -> dict[str, str]:
        """Each upstream's /health, for the operators' view. Never raises and takes at most a second, so as a
        readiness check it cannot make the gateway unready."""

        async def one(client: httpx.AsyncClient) -> str:
            try:
                (await client.get("/health", timeout=1.0)).raise_for_status()
                return "ok"
            except httpx.HTTPError as exc:
                return f"unavailable: {type(exc).__name__}"

        results = await asyncio.gather(*(one(c) for c in self.clients.values()))
        return dict(zip(self.clients, results, strict=True))

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response | Response:
        """The upstream's reply, or the problem response that replaces it when the call itself failed."""
        sent = {"content-type": "application/json"} if content is not None else {}
        for name in FORWARDED_HEADERS:
            if headers and (value := headers.get(name)):
                sent[name] = value
        propagate.inject(sent)  # the owning service continues this request's trace
        try:
            return await self.clients[service].request(method, path, content=content, params=params, headers=sent)
        except httpx.TimeoutException:
            return problem(504, f"{service} did not answer in time", headers=self._retry())
        except httpx.TransportError:
            return problem(503, f"{service} is unavailable", headers=self._retry())

    async def forward(
        self,
        service: str,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        reply = await self.call(service, method, path, content=content, params=params, headers=headers)
        if isinstance(reply, Response):
            return reply
        return self.relay(service, reply)

    def relay(self, service: str, reply: httpx.Response) -> Response:
        if reply.status_code < 400:
            return Response(reply.content, status_code=reply.status_code, media_type=reply.headers.get("content-type"))
        return self.translate(service, reply)

    def translate(self, service: str, reply: httpx.Response) -> Response:
        status = reply.status_code
        if status >= 500:
            if status in (503, 504):
                return problem(status, f"{service} is unavailable", headers=self._retry())
            log.warning("%s answered %d: %s", service, status, reply.text[:500])
            return problem(502, f"{service} failed ({status})")
        try:
            detail = reply.json().get("detail")
        except (ValueError, AttributeError):
            detail = reply.text[:500] or None
        if isinstance(detail, list):
            errors = field_errors([e for e in detail if isinstance(e, dict)])
            text = "; ".join(e["msg"] for e in errors) or "rejected"
            return problem(status, text, errors=errors)
        text = detail if isinstance(detail, str) else json.dumps(detail) if detail is not None else "rejected"
        if status not in (400, 401, 403, 404, 405, 409, 413, 415, 422, 429):
            status = 400
        return problem(status, text)

    def _retry(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}
