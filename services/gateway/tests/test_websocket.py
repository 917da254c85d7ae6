"""The WebSocket protocol against real gateways (uvicorn, Kafka, PostgreSQL, Redis): authentication on connect,
acknowledged subscriptions, updates numbered identically on two replicas, resuming on the other replica with a
backfill, the product's endpoint still pushing `analytics_update`, the per-IP connection limit, a slow reader
closed without delaying the others, and the fan-out traced from the consumed event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from om_cli.testing import eventually, produce
from om_contracts import MarketMetricsUpdated, MarketSummary, SystemMetrics, SystemMetricsUpdated, encode
from om_gateway import ws as endpoint
from om_gateway.app import create_app
from om_gateway.live import frame
from om_gateway.testing import ADMIN_KEY, gateway_settings, serving, stub_analytics, stub_ingest, stub_prediction, token

pytestmark = pytest.mark.integration


def market(price: float, market_id: str = "m1") -> bytes:
    return encode(
        MarketMetricsUpdated(
            occurred_at=datetime.now(UTC),
            producer="test",
            market_id=market_id,
            status="open",
            current_price=price,
            price_change_24h=0.0,
            volume_24h=1.0,
            total_volume=1.0,
            trade_count=1,
            participant_count=1,
        )
    )


def system(trades: int) -> bytes:
    return encode(
        SystemMetricsUpdated(
            occurred_at=datetime.now(UTC),
            producer="test",
            system_metrics=SystemMetrics(
                total_users=3,
                active_users=2,
                total_markets=1,
                active_markets=1,
                total_volume_24h=12.5,
                total_trades_24h=trades,
            ),
            top_markets=[MarketSummary(market_id="m1", current_price=0.6, volume_24h=12.5, price_change_24h=20.0)],
        )
    )


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


def gateway_app(infra_env: dict[str, str], tmp_path: Any) -> Any:
    transports = {
        n: httpx.ASGITransport(app=a())
        for n, a in (("ingest", stub_ingest), ("prediction", stub_prediction), ("analytics", stub_analytics))
    }
    return create_app(gateway_settings(infra_env, tmp_path), transports=transports)


async def test_protocol_sequence_numbers_and_resume_on_another_replica(infra_env, tmp_path, kafka_bootstrap) -> None:
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(serving(gateway_app(infra_env, tmp_path)))
        second = gateway_app(infra_env, tmp_path)
        two = await stack.enter_async_context(serving(second))

        async with websockets.connect(f"ws://{one}/api/v1/ws?token=wrong") as refused:
            with pytest.raises(websockets.ConnectionClosed):
                await refused.recv()
            assert refused.close_code == 4001

        async with websockets.connect(f"ws://{one}/api/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token("viewer")}))
            assert (await next_of(ws, "welcome"))["role"] == "viewer"
            await ws.send(json.dumps({"type": "subscribe", "id": "s1", "channels": ["market/m1"]}))
            assert (await next_of(ws, "ack"))["id"] == "s1"
            assert (await next_of(ws, "snapshot"))["channel"] == "market/m1"
            # Both replicas follow the topic from their start: publish until the first replica forwards updates.
            await produce(kafka_bootstrap, "analytics.market.v1", [market(p / 10) for p in range(1, 4)], key=b"m1")
            seqs = [(await next_of(ws, "market_update"))["seq"] for _ in range(3)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

        async def second_replica_has_read_them() -> None:
            history = second.state.hub.history.get("market/m1")
            assert history is not None and [seq for seq, _ in history.updates] == seqs

        await eventually(second_replica_has_read_them)
        async with websockets.connect(f"ws://{two}/api/v1/ws?token={ADMIN_KEY}") as ws:
            await next_of(ws, "welcome")
            await ws.send(json.dumps({"type": "subscribe", "id": 2, "channels": ["market/m1"], "since": seqs[0]}))
            backfill = await next_of(ws, "backfill")
            assert backfill["count"] == 2
            resumed = [json.loads(await ws.recv()) for _ in range(2)]
            assert [m["seq"] for m in resumed] == seqs[1:]
            assert [m["market"]["current_price"] for m in resumed] == [0.2, 0.3]


async def test_the_product_endpoint_pushes_analytics_update(infra_env, tmp_path, kafka_bootstrap) -> None:
    async with serving(gateway_app(infra_env, tmp_path)) as url:
        path = f"ws://{url}/api/v1/ai-analytics/ws/analytics/client-1?token={token('viewer')}"
        async with websockets.connect(path) as ws:
            await next_of(ws, "welcome")
            await produce(kafka_bootstrap, "analytics.system.v1", [system(5)])
            update = await next_of(ws, "analytics_update")
            assert update["system_metrics"]["total_trades_24h"] == 5
            assert update["top_markets"] == [
                {"market_id": "m1", "current_price": 0.6, "volume_24h": 12.5, "price_change_24h": 20.0}
            ]
            await ws.send("x" * (70 * 1024))
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1009


async def test_connections_per_ip_are_limited_from_the_handshake(infra_env, tmp_path) -> None:
    app = create_app(gateway_settings(infra_env, tmp_path, ws_max_connections_per_ip=2))
    async with serving(app) as url, contextlib.AsyncExitStack() as stack:
        authenticated = await stack.enter_async_context(websockets.connect(f"ws://{url}/api/v1/ws?token={ADMIN_KEY}"))
        await next_of(authenticated, "welcome")
        await stack.enter_async_context(websockets.connect(f"ws://{url}/api/v1/ws"))  # not authenticated yet: counts
        async with websockets.connect(f"ws://{url}/api/v1/ws?token={ADMIN_KEY}") as third:
            with pytest.raises(websockets.ConnectionClosed):
                await third.recv()
        assert third.close_code == 4029 and "IP address" in third.close_reason
        await authenticated.close()

        async def a_place_is_free() -> None:
            async with websockets.connect(f"ws://{url}/api/v1/ws?token={ADMIN_KEY}") as again:
                assert (await next_of(again, "welcome"))["role"] == "admin"

        await eventually(a_place_is_free)


@pytest.mark.parametrize("split", [False, True], ids=["event-loop", "send-thread"])
async def test_a_slow_reader_is_closed_and_never_delays_the_others(
    infra_env, tmp_path, monkeypatch, split: bool
) -> None:
    """Real sockets: frames go straight to each socket while it takes them and queue behind it when it does not;
    a client that stops reading fills its queue and is closed (4008) while a reading one gets every frame in
    order. Also with every round split between the event loop and the send thread (GATEWAY_WS_SEND_THREAD),
    whose partial writes and refusals go back to the event loop."""
    monkeypatch.setattr(endpoint, "CLOSE_TIMEOUT_S", 0.5)  # the stuck client will not read its close frame either
    app = create_app(gateway_settings(infra_env, tmp_path, ws_queue_size=8, ws_send_thread=split))
    hub = app.state.hub
    assert (hub.splitter is not None) == split
    hub.split_from = 1  # (from 1,000 clients by default)
    async with serving(app) as url:
        path = f"ws://{url}/api/v1/ws?token={ADMIN_KEY}"
        async with websockets.connect(path, max_queue=1) as stuck, websockets.connect(path, max_size=None) as reader:
            await next_of(stuck, "welcome")
            await next_of(reader, "welcome")
            await eventually(lambda: _assert(len(hub.clients) == 2))
            assert all(c.socket is not None for c in hub.clients)  # uvicorn's sans-I/O protocol: direct writes
            received: list[int] = []

            async def read_all() -> None:
                while len(received) < 150:
                    message = json.loads(await reader.recv())
                    if message.get("type") != "heartbeat":  # (one may come: the test can take over a second)
                        received.append(message["n"])

            reading = asyncio.create_task(read_all())
            padding = "x" * 256 * 1024
            for n in range(150):  # ~38 MB, far more than the socket buffers hold
                update = frame(json.dumps({"n": n, "padding": padding}))
                if split:  # as a round does: both clients in one flush, one of them by the send thread
                    hub.flush_deliveries([(client, update, 1) for client in list(hub.clients)])
                else:
                    for client in list(hub.clients):
                        client.offer(update)
                await asyncio.sleep(0.005)
            async with asyncio.timeout(30):
                await reading
            assert received == list(range(150))
            await eventually(lambda: _assert(len(hub.clients) == 1))  # the stuck one is gone
            async with httpx.AsyncClient() as http:
                metrics = await http.get(f"http://{url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            assert 'gateway_ws_closes_total{code="4008"} 1.0' in metrics.text


async def test_a_silent_client_is_closed_as_idle_and_a_talking_one_stays(infra_env, tmp_path) -> None:
    """The reader awaits each message directly; the sender ending (here: idle) still ends the connection, and a
    client whose pings keep coming is answered every time and kept."""
    app = create_app(gateway_settings(infra_env, tmp_path, ws_heartbeat_s=0.3, ws_idle_timeout_s=1.0))
    hub = app.state.hub
    async with serving(app) as url:
        path = f"ws://{url}/api/v1/ws?token={ADMIN_KEY}"
        async with websockets.connect(path) as silent, websockets.connect(path) as talking:
            await next_of(silent, "welcome")
            await next_of(talking, "welcome")
            for n in range(12):  # 2.4 s: past the idle timeout
                await talking.send(json.dumps({"type": "ping", "id": n}))
                assert (await next_of(talking, "pong"))["id"] == n
                await asyncio.sleep(0.2)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await silent.recv()
            assert silent.close_code == 4000
            await eventually(lambda: _assert(len(hub.clients) == 1))


async def _assert(condition: bool) -> None:
    assert condition


async def test_the_fan_out_is_traced_from_the_consumed_event(infra_env, tmp_path, kafka_bootstrap) -> None:
    """One `<topic> process` span per consumed batch, linked to each record's trace (its `traceparent` header),
    and one `live websocket send` span per read, linked to it, in which the subscribers are sent the update."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    try:
        async with serving(gateway_app(infra_env, tmp_path)) as url:
            async with websockets.connect(f"ws://{url}/api/v1/ws?token={ADMIN_KEY}") as ws:
                await ws.send(json.dumps({"type": "subscribe", "id": 1, "channels": ["market/traced"]}))
                await next_of(ws, "snapshot")
                producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
                await producer.start()
                try:
                    header = f"00-{trace_id:032x}-{parent_id:016x}-01".encode()
                    await producer.send_and_wait(
                        "analytics.market.v1", market(0.4, "traced"), key=b"traced", headers=[("traceparent", header)]
                    )
                finally:
                    await producer.stop()
                assert (await next_of(ws, "market_update"))["market"]["market_id"] == "traced"
        [batch] = [
            s
            for s in memory.get_finished_spans()
            if s.name == "analytics.market.v1 process" and any(link.context.trace_id == trace_id for link in s.links)
        ]
        assert [link.context.span_id for link in batch.links] == [parent_id]
        [send] = [
            s
            for s in memory.get_finished_spans()
            if any(link.context.span_id == batch.context.span_id for link in s.links)
        ]
        assert send.name == "live websocket send"
        assert send.attributes is not None and send.attributes["om.websocket.deliveries"] == 1
    finally:
        memory.shutdown()
