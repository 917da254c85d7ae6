"""Calls to the internal APIs of the services that own the data. Their answers pass through unchanged;
an unreachable service becomes 503 and a slow one 504, with a detail that names it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Response
from fastapi.responses import JSONResponse
from opentelemetry import propagate


class Upstreams:
    def __init__(self, urls: dict[str, str], timeout_s: float) -> None:
        self.urls = urls
        self.timeout_s = timeout_s
        self.clients: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Upstreams]:
        async with contextlib.AsyncExitStack() as stack:
            for name, url in self.urls.items():
                self.clients[name] = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, timeout=self.timeout_s)
                )
            yield self

    async def ready(self) -> None:
        """Every upstream answers its /health."""
        for name, client in self.clients.items():
            try:
                (await client.get("/health", timeout=2.0)).raise_for_status()
            except httpx.HTTPError as exc:
                raise ConnectionError(f"{name}: {exc!r}") from exc

    async def forward(
        self, service: str, method: str, path: str, *, content: bytes | None = None, params: Any = None
    ) -> Response:
        headers = {"content-type": "application/json"} if content is not None else {}
        propagate.inject(headers)  # the owning service continues this request's trace
        try:
            reply = await self.clients[service].request(method, path, content=content, params=params, headers=headers)
        except httpx.TimeoutException:
            return JSONResponse({"detail": f"{service} did not answer in time"}, status_code=504)
        except httpx.TransportError:
            return JSONResponse({"detail": f"{service} is unavailable"}, status_code=503)
        return Response(reply.content, status_code=reply.status_code, media_type=reply.headers.get("content-type"))
