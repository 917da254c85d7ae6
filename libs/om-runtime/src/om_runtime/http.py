"""Operational HTTP endpoints every service serves: `/health` (alive), `/ready` (dependencies reachable), `/metrics`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], Awaitable[object]]


def ops_router(
    checks: Mapping[str, Check], registry: CollectorRegistry, *, optional: Collection[str] = ()
) -> APIRouter:
    """`optional` names checks that are reported but do not make the service unready (e.g. Kafka for ingest,
    whose writes keep succeeding into the outbox while the broker is down)."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", summary="Every dependency answers", responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        async def run(check: Check) -> str:
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                return "ok"
            except Exception as exc:  # any failure means not ready; say which and why
                return f"failed: {type(exc).__name__}: {exc}"

        results = dict(zip(checks, await asyncio.gather(*(run(c) for c in checks.values())), strict=True))
        ok = all(r == "ok" for name, r in results.items() if name not in optional)
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": results}, status_code=200 if ok else 503
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
