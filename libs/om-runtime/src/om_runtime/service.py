"""The shape every service process shares: resources opened in order, topics provisioned, the broker started,
background loops run, and an HTTP app with probes and metrics — all closed again in reverse on shutdown.

    runtime = ServiceRuntime(settings)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.consume_in_transaction(db, {MARKET_TRADES: handlers.on_trade})
    app = runtime.create_app(title="feature", routers=[api])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import APIRouter, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CollectorRegistry

from om_contracts import Topic
from om_runtime.http import Check, ops_router
from om_runtime.kafka import BatchHandler, EventPublisher, Handler, consume, create_broker, dispatch, ensure_topics
from om_runtime.metrics import HttpMetricsMiddleware
from om_runtime.settings import ServiceSettings
from om_runtime.telemetry import setup_logging, setup_tracing

if TYPE_CHECKING:  # only services with a database import om_runtime.db (and psycopg)
    from om_runtime.db import Database, TxBatchHandler, TxHandler

log = logging.getLogger(__name__)


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.broker = create_broker(
            settings.kafka_bootstrap_servers, client_id=settings.service_name, registry=self.registry
        )
        self.publisher = EventPublisher(self.broker)
        self.checks: dict[str, Check] = {"kafka": self._kafka_ready}
        self._resources: list[AbstractAsyncContextManager[Any]] = []
        self._loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    async def _kafka_ready(self) -> None:
        if not await self.broker.ping(timeout=2.0):
            raise ConnectionError(f"Kafka at {self.settings.kafka_bootstrap_servers} does not answer")

    def add_resource(self, resource: AbstractAsyncContextManager[Any], *, name: str, check: Check) -> None:
        """Open `resource` before the broker starts, close it after the broker stops; `check` feeds /ready."""
        self._resources.append(resource)
        self.checks[name] = check

    def add_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop()` as a task while the service is up (it should loop until cancelled)."""
        self._loops.append((name, loop))

    def consume(self, handlers: Mapping[Topic, Handler], *, fanout: bool = False) -> None:
        """Call each event's topic handler; with `fanout`, every process receives every new event."""
        self._subscribe(handlers, dispatch(handlers), fanout=fanout)

    def consume_in_transaction(
        self,
        db: Database,
        handlers: Mapping[Topic, TxHandler] | TxBatchHandler,
        *,
        topics: Collection[Topic] = (),
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        """Apply each batch of events in one transaction, each event exactly once (see db.transactional):
        per event with a mapping of topic handlers, or as a whole with a batch handler and its `topics`."""
        from om_runtime.db import transactional

        topics = handlers.keys() if isinstance(handlers, Mapping) else topics
        self._subscribe(topics, transactional(db, self.publisher, handlers, after_commit=after_commit))

    def _subscribe(self, topics: Collection[Topic], process: BatchHandler, *, fanout: bool = False) -> None:
        consume(
            self.broker,
            topics,
            process,
            consumer=self.settings.service_name,
            publisher=self.publisher,
            fanout=fanout,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for resource in self._resources:
                await stack.enter_async_context(resource)
            await ensure_topics(
                self.settings.kafka_bootstrap_servers, replication_factor=self.settings.kafka_replication_factor
            )
            await self.broker.start()
            stack.push_async_callback(self.broker.stop)
            for name, loop in self._loops:
                stack.push_async_callback(_cancel, asyncio.create_task(_supervised(name, loop), name=name))
            log.info("%s started", self.settings.service_name)
            yield

    def create_app(
        self, *, title: str, description: str = "", routers: Sequence[APIRouter] = (), **fastapi_kwargs: Any
    ) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            async with self.running():
                yield

        app = FastAPI(title=title, description=description, lifespan=lifespan, **fastapi_kwargs)
        app.include_router(ops_router(self.checks, self.registry))
        for router in routers:
            app.include_router(router)
        app.state.runtime = self
        app.add_middleware(HttpMetricsMiddleware, registry=self.registry, service=self.settings.service_name)
        FastAPIInstrumentor.instrument_app(app, excluded_urls="/health,/ready,/metrics")
        return app


async def _supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: log a crash and start it again after a pause."""
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop %s crashed; restarting in 1 s", name)
            await asyncio.sleep(1.0)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup_telemetry(settings: ServiceSettings) -> None:
    setup_logging(settings.service_name, settings.log_level)
    setup_tracing(settings.service_name)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app until SIGINT/SIGTERM; uvicorn runs the lifespan, so shutdown is graceful."""
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)
