"""The shape every service process shares: resources opened in order, topics provisioned, the broker started,
background loops run, and an HTTP app with probes and metrics — all closed again in reverse on shutdown.

    runtime = ServiceRuntime(settings)
    runtime.add_resource(db, name="postgres", check=db.ping)
    runtime.consume_in_transaction(db, {MARKET_TRADES: handlers.on_trade})
    app = runtime.create_app(title="feature", routers=[api])

A service that must serve while Kafka is down (ingest) passes `kafka_required=False`: the broker connection and
the consumers are then retried in the background, and /ready reports Kafka without failing on it.

Before the app serves (and so before /ready answers), it is warmed up: what the first requests would otherwise wait for
is done at start-up (see `warm_up`), with any service-specific steps added by `add_warm_up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CollectorRegistry

from om_contracts import Topic
from om_runtime.consumer import ConsumerMetrics, GroupConsumer, PartitionListener
from om_runtime.failures import Backoff, is_retry_now
from om_runtime.heap import frozen
from om_runtime.http import Check, ops_router
from om_runtime.kafka import (
    BatchHandler,
    Delivery,
    EventPublisher,
    Handler,
    consume,
    create_broker,
    dispatch,
    ensure_topics,
)
from om_runtime.loopwatch import LoopWatch, LoopWatchSettings
from om_runtime.metrics import CACHE_READS, HttpMetricsMiddleware, PoolMetrics
from om_runtime.settings import ServiceSettings
from om_runtime.telemetry import setup_logging, setup_tracing

if TYPE_CHECKING:  # only services with a database import om_runtime.db (and psycopg)
    from om_runtime.db import Database, TxBatchHandler, TxHandler

log = logging.getLogger(__name__)


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, *, kafka_required: bool = True) -> None:
        self.settings = settings
        self.kafka_required = kafka_required
        self.registry = CollectorRegistry()
        self.broker = create_broker(
            settings.kafka_bootstrap_servers,
            client_id=settings.service_name,
            registry=self.registry,
            linger_ms=settings.kafka_linger_ms,
            compression_type=settings.kafka_compression_type,
        )
        self.publisher = EventPublisher(self.broker)
        self.checks: dict[str, Check] = {"kafka": self._kafka_ready}
        #: Checks reported by /ready that do not make the service unready when they fail.
        self.optional_checks: set[str] = set() if kafka_required else {"kafka"}
        self.consumer_metrics = ConsumerMetrics(self.registry)
        self.pool_metrics = PoolMetrics(self.registry, settings.service_name)
        self.registry.register(CACHE_READS)  # the process's cache hit/miss counter (om_runtime.metrics)
        self.consumers: list[GroupConsumer] = []
        #: Set once the broker is connected (at start, or later when Kafka is optional and was down).
        self.kafka_started = asyncio.Event()
        self._resources: list[AbstractAsyncContextManager[Any]] = []
        self._loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._warm_ups: list[Callable[[], Awaitable[object]]] = []
        slow = settings.event_loop_slow_callback_ms
        self.loop_watch = LoopWatch(
            self.registry,
            settings.service_name,
            LoopWatchSettings(
                interval_s=settings.event_loop_probe_ms / 1000,
                stall_s=settings.event_loop_stall_ms / 1000,
                slow_callback_s=slow / 1000 if slow is not None else None,
                warn_interval_s=settings.event_loop_warn_interval_s,
            ),
        )

    async def _kafka_ready(self) -> None:
        if not await self.broker.ping(timeout=2.0):
            raise ConnectionError(f"Kafka at {self.settings.kafka_bootstrap_servers} does not answer")

    def add_resource(self, resource: AbstractAsyncContextManager[Any], *, name: str, check: Check) -> None:
        """Open `resource` before the broker starts, close it after the broker stops; `check` feeds /ready. A
        `Database` (anything with `pool_stats()`) also gets its pools' `om_db_pool_*` series."""
        self._resources.append(resource)
        if callable(pool_stats := getattr(resource, "pool_stats", None)):
            self.pool_metrics.watch(pool_stats)
        self.checks[name] = check

    def add_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop()` as a task while the service is up (it should loop until cancelled)."""
        self._loops.append((name, loop))

    def add_warm_up(self, step: Callable[[], Awaitable[object]]) -> None:
        """Await `step()` at start-up, after the resources are open and the generic warm-up, before the app serves
        (e.g. a first connection or a script load the first request would otherwise wait for). It should not raise:
        a step whose dependency may be down logs and returns, as the service must start anyway."""
        self._warm_ups.append(step)

    async def warm_up(self, app: FastAPI) -> None:
        """Do before serving what the first requests would otherwise wait for (0.05-1 s after a start): FastAPI
        builds an included router's routes lazily, all of them on the first request OpenTelemetry names (it lists
        every route), and the OpenAPI document on its first request; then the service's own steps."""
        started = time.perf_counter()
        app.openapi()  # (lists every route in the schema, which builds each one)
        for _ in iter_route_contexts(app.routes):  # (and the rest, as OpenTelemetry's route lookup would)
            pass
        for step in self._warm_ups:
            await step()
        log.info("warmed up in %.0f ms", (time.perf_counter() - started) * 1000)

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
        max_records: int = 500,
    ) -> None:
        """Apply each batch of events in one transaction, each event exactly once (see db.transactional):
        per event with a mapping of topic handlers, or as a whole with a batch handler and its `topics`; a batch
        holds at most `max_records` events (under a backlog; less when fewer are waiting)."""
        from om_runtime.db import StoredOffsets, prune_dedupe_window, transactional

        topics = handlers.keys() if isinstance(handlers, Mapping) else topics
        name = self.settings.service_name
        process = transactional(db, self.publisher, handlers, consumer=name, after_commit=after_commit)
        self._group_consumer(
            topics, process, StoredOffsets(db, name), fallback_to_committed=True, max_records=max_records
        )
        window = timedelta(hours=self.settings.dedupe_window_hours)
        self.add_loop("dedupe-window-prune", lambda: prune_dedupe_window(db, window))

    def consume_stateful(
        self,
        process: Callable[[list[Delivery]], Awaitable[None]],
        *,
        topics: Collection[Topic],
        listener: PartitionListener,
        max_records: int = 500,
        pipelined: bool = False,
    ) -> None:
        """For a consumer that keeps its own state and checkpoints (with the offsets it covers).

        `listener.on_assigned` says where each assigned partition resumes, `listener.on_revoked` flushes before
        partitions move (and `on_offset_regression(partition, stored, log_end)`, if present, hears that the broker
        lost its log). `process` gets each batch of valid deliveries; it must apply all or nothing: if it raises,
        the same deliveries come again (after a pause when the failure is systemic, or one at a time to find a
        poison event, which is then dead-lettered). With `pipelined`, the next batch is fetched and decoded while
        `process` applies the one before (batches still apply one at a time and in order)."""

        async def apply(deliveries: list[Delivery], offsets: Mapping[tuple[str, int], int]) -> None:
            if deliveries:
                await process(deliveries)

        self._group_consumer(topics, apply, listener, max_records=max_records, pipelined=pipelined)

    def _group_consumer(self, topics: Collection[Topic], process: Any, listener: PartitionListener, **kw: Any) -> None:
        self.consumers.append(
            GroupConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                topics=list(topics),
                group=self.settings.service_name,
                process=process,
                listener=listener,
                publisher=self.publisher,
                metrics=self.consumer_metrics,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                on_log_lost=self._provision_topics,
                **kw,
            )
        )

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
            stack.push_async_callback(_cancel, asyncio.create_task(self.loop_watch.run(), name="loop-watch"))
            for resource in self._resources:
                await stack.enter_async_context(resource)
            if self.kafka_required:
                await self._start_kafka()
            else:
                stack.push_async_callback(_cancel, asyncio.create_task(self._start_kafka_eventually()))
            stack.push_async_callback(self._stop_kafka)
            for name, loop in self._loops:
                stack.push_async_callback(_cancel, asyncio.create_task(_supervised(name, loop), name=name))
            if self.settings.gc_freeze:
                await stack.enter_async_context(frozen(self.settings.gc_freeze_again_s))
            log.info("%s started", self.settings.service_name)
            yield

    async def _provision_topics(self) -> list[str]:
        """Create the registry's missing topics: at start, and again when a consumer finds the broker lost its log
        (the embedded broker keeps it in memory), so topics come back with their own partition counts rather than
        the broker's default for a topic a client names first (4 on Tansu); a topic re-created meanwhile keeps it."""
        return await ensure_topics(
            self.settings.kafka_bootstrap_servers,
            replication_factor=self.settings.kafka_replication_factor,
            partitions=self.settings.kafka_topic_partitions,
        )

    async def _start_kafka(self) -> None:
        await self._provision_topics()
        await self.broker.start()
        self._consumer_tasks = [
            asyncio.create_task(_supervised(f"consumer-{i}", c.run), name=f"consumer-{i}")
            for i, c in enumerate(self.consumers)
        ]
        self.kafka_started.set()

    async def _start_kafka_eventually(self) -> None:
        backoff = Backoff(cap_s=10.0)
        while True:
            try:
                await self._start_kafka()
                log.info("connected to Kafka at %s", self.settings.kafka_bootstrap_servers)
                return
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                delay = backoff.next_delay()
                log.warning(
                    "Kafka at %s is unavailable (%s); serving without it, retrying in %.1f s",
                    self.settings.kafka_bootstrap_servers,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _stop_kafka(self) -> None:
        tasks = getattr(self, "_consumer_tasks", [])
        for consumer in self.consumers:
            await consumer.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=15.0)
        for task in tasks:
            await _cancel(task)
        if self.kafka_started.is_set():
            await self.broker.stop()

    def create_app(
        self, *, title: str, description: str = "", routers: Sequence[APIRouter] = (), **fastapi_kwargs: Any
    ) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with self.running():
                await self.warm_up(app)
                yield

        # FastAPI's own telemetry (new in 0.16x) would add a second server span and two `fastapi.*` operation spans to
        # every request, on top of the OpenTelemetry instrumentation below that the traces and tests are built on:
        # off, with its metrics (ours are at /metrics) and logs bridge.
        fastapi_kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
        app = FastAPI(title=title, description=description, lifespan=lifespan, **fastapi_kwargs)
        app.include_router(ops_router(self.checks, self.registry, optional=self.optional_checks))
        for router in routers:
            app.include_router(router)
        app.state.runtime = self
        app.add_middleware(HttpMetricsMiddleware, registry=self.registry, service=self.settings.service_name)
        # One span per request: the per-message "http send"/"http receive" child spans cost two more span starts per
        # request (a fifth of the gateway's CPU on a cached read) and say nothing the request span does not.
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="/health,/ready,/metrics", exclude_spans=["receive", "send"]
        )
        return app


async def _supervised(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: log a crash and start it again after a pause (at once, up to 3 times in a row
    within a second, when PostgreSQL rolled its transaction back on a conflict)."""
    quick: list[float] = []  # when the recent immediate restarts happened
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            now = time.monotonic()
            quick = [t for t in quick if now - t < 1.0]
            if is_retry_now(exc) and len(quick) < 3:  # a deadlock or serialization failure: the next round succeeds
                quick.append(now)
                log.warning("background loop %s: its transaction was rolled back (%s); restarting now", name, exc)
                await asyncio.sleep(0.01)
                continue
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
