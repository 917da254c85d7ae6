"""HTTP request metrics every service exposes at /metrics: request count by route and status, and latency,
labelled `app_name` like the FastStream Kafka metrics (a `service` label would clash with Prometheus target labels).

The alerts (error rate, p99 latency, spikes of 401/429) and the Grafana dashboard read these series.
Routes are labelled by their template (`/v1/markets/{market_id}`), never by the raw path, to bound cardinality.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets in seconds, from a cache hit to a slow upstream call.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Paths the probes and Prometheus call; counting them would drown the real traffic.
UNMEASURED = frozenset({"/health", "/ready", "/metrics"})


class HttpMetricsMiddleware:
    """ASGI middleware recording `om_http_requests_total` and `om_http_request_duration_seconds`."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry, service: str) -> None:
        self.app = app
        self.service = service
        self.requests = Counter(
            "om_http_requests",
            "HTTP requests handled, by route template, method and status code",
            ["app_name", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "om_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["app_name", "method", "route"],
            buckets=BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMEASURED:
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response starts is answered with a 500
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.requests.labels(self.service, method, route, str(status)).inc()
            self.latency.labels(self.service, method, route).observe(time.perf_counter() - started)
