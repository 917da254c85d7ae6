"""gateway's live updates without a server: the product's message shapes, fan-out to WebSocket clients
(everyone gets system updates, subscribers get their markets), slow clients lose their oldest message instead
of blocking anyone, and the client-message handler."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from om_contracts import MarketMetricsUpdated, MarketSummary, SystemMetrics, SystemMetricsUpdated
from om_gateway.api import _handle
from om_gateway.live import Client, LiveHub, analytics_update, market_update

T0 = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)


def system_event(total_users: int = 10, *, at: datetime = T0, top: int = 2) -> SystemMetricsUpdated:
    return SystemMetricsUpdated(
        occurred_at=at,
        producer="analytics",
        system_metrics=SystemMetrics(
            total_users=total_users,
            active_users=4,
            total_markets=7,
            active_markets=5,
            total_volume_24h=1234.5,
            total_trades_24h=321,
        ),
        top_markets=[
            MarketSummary(market_id=f"m-{i}", current_price=0.25 * (i + 1), volume_24h=100.0 - i, price_change_24h=-1.5)
            for i in range(top)
        ],
    )


def market_event(market_id: str = "m-1", price: float = 0.6) -> MarketMetricsUpdated:
    return MarketMetricsUpdated(
        occurred_at=T0,
        producer="analytics",
        market_id=market_id,
        status="open",
        current_price=price,
        price_change_24h=20.0,
        volume_24h=50.0,
        total_volume=80.0,
        trade_count=9,
        participant_count=4,
        predicted_probability=0.61,
        model_version="baseline-market-price",
    )


def drain(client: Client) -> list[dict]:
    out = []
    while not client.queue.empty():
        out.append(client.queue.get_nowait())
    return out


# --- message shapes ---------------------------------------------------------------------------------


def test_analytics_update_has_exactly_the_product_shape() -> None:
    message = analytics_update(system_event())
    assert message == {
        "type": "analytics_update",
        "timestamp": "2025-06-15T12:00:00Z",
        "system_metrics": {
            "total_users": 10,
            "active_users": 4,
            "total_markets": 7,
            "active_markets": 5,
            "total_volume_24h": 1234.5,
            "total_trades_24h": 321,
        },
        "top_markets": [
            {"market_id": "m-0", "current_price": 0.25, "volume_24h": 100.0, "price_change_24h": -1.5},
            {"market_id": "m-1", "current_price": 0.5, "volume_24h": 99.0, "price_change_24h": -1.5},
        ],
    }
    # It is plain JSON: it survives a round trip unchanged.
    assert json.loads(json.dumps(message)) == message


def test_analytics_update_timestamp_is_utc_with_z_for_any_input_offset() -> None:
    at = datetime(2025, 6, 15, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    stamp = analytics_update(system_event(at=at))["timestamp"]
    assert stamp == "2025-06-15T12:00:00.123456Z"
    assert stamp.endswith("Z") and "+" not in stamp
    assert datetime.fromisoformat(stamp) == at


def test_analytics_update_with_no_top_markets() -> None:
    assert analytics_update(system_event(top=0))["top_markets"] == []


def test_market_update_carries_the_market_without_envelope_fields() -> None:
    message = market_update(market_event())
    assert message == {
        "type": "market_update",
        "timestamp": "2025-06-15T12:00:00Z",
        "market": {
            "market_id": "m-1",
            "status": "open",
            "current_price": 0.6,
            "price_change_24h": 20.0,
            "volume_24h": 50.0,
            "total_volume": 80.0,
            "trade_count": 9,
            "participant_count": 4,
            "predicted_probability": 0.61,
            "model_version": "baseline-market-price",
            # Optional fields analytics added (issue 7); unset in this event.
            **dict.fromkeys(
                (
                    "category",
                    "as_of",
                    "trades_24h",
                    "volume_trend",
                    "active_traders_24h",
                    "volatility",
                    "momentum",
                    "liquidity",
                    "social_mentions_24h",
                    "news_mentions_24h",
                    "sentiment_24h",
                    "prediction_confidence",
                ),
            ),  # fmt: skip
        },
    }


# --- LiveHub ----------------------------------------------------------------------------------------


async def test_new_client_gets_nothing_before_the_first_update() -> None:
    hub = LiveHub(queue_size=4)
    client = hub.connect("c-1")
    assert client.client_id == "c-1"
    assert client.queue.empty()
    assert hub.clients == {client}


async def test_new_client_immediately_gets_the_latest_update() -> None:
    hub = LiveHub(queue_size=4)
    await hub.on_system(system_event(1))
    await hub.on_system(system_event(2))
    late = hub.connect("late")
    assert drain(late) == [analytics_update(system_event(2))]


async def test_system_update_is_broadcast_to_every_client() -> None:
    hub = LiveHub(queue_size=4)
    clients = [hub.connect(f"c-{i}") for i in range(3)]
    clients[0].markets.add("m-9")  # subscriptions do not matter for system updates
    await hub.on_system(system_event(5))
    expected = analytics_update(system_event(5))
    for c in clients:
        assert drain(c) == [expected]
    assert hub.latest == expected


async def test_market_update_goes_only_to_subscribers_of_that_market() -> None:
    hub = LiveHub(queue_size=4)
    a, b, c = hub.connect("a"), hub.connect("b"), hub.connect("c")
    _handle(a, json.dumps({"type": "subscribe", "market_ids": ["m-1"]}))
    _handle(b, json.dumps({"type": "subscribe", "market_ids": ["m-2", "m-1"]}))
    _handle(c, json.dumps({"type": "subscribe", "market_ids": ["m-2"]}))
    await hub.on_market(market_event("m-1"))
    expected = market_update(market_event("m-1"))
    assert drain(a) == [expected]
    assert drain(b) == [expected]
    assert drain(c) == []
    # A market update does not replace the latest system update shown to new clients.
    assert hub.latest is None


async def test_market_update_with_no_subscribers_reaches_nobody() -> None:
    hub = LiveHub(queue_size=4)
    clients = [hub.connect("a"), hub.connect("b")]
    await hub.on_market(market_event("m-1"))
    assert all(c.queue.empty() for c in clients)


async def test_slow_client_loses_its_oldest_message_and_never_blocks() -> None:
    hub = LiveHub(queue_size=2)
    slow = hub.connect("slow")
    _handle(slow, json.dumps({"type": "subscribe", "market_ids": ["m-1"]}))
    # Nobody reads the queue; five updates must still be delivered without waiting.
    await asyncio.wait_for(hub.on_system(system_event(1)), timeout=1)
    await asyncio.wait_for(hub.on_system(system_event(2)), timeout=1)
    await asyncio.wait_for(hub.on_market(market_event("m-1", 0.1)), timeout=1)
    await asyncio.wait_for(hub.on_system(system_event(3)), timeout=1)
    await asyncio.wait_for(hub.on_market(market_event("m-1", 0.2)), timeout=1)
    assert slow.queue.qsize() == 2
    assert drain(slow) == [analytics_update(system_event(3)), market_update(market_event("m-1", 0.2))]


async def test_slow_client_does_not_affect_other_clients() -> None:
    hub = LiveHub(queue_size=1)
    slow, fast = hub.connect("slow"), hub.connect("fast")
    received = []
    for n in range(3):
        await hub.on_system(system_event(n))
        received += drain(fast)
    assert received == [analytics_update(system_event(n)) for n in range(3)]
    assert drain(slow) == [analytics_update(system_event(2))]


async def test_reader_waiting_on_queue_gets_broadcast() -> None:
    hub = LiveHub(queue_size=2)
    client = hub.connect("c")
    reader = asyncio.create_task(client.queue.get())
    await asyncio.sleep(0)
    await hub.on_system(system_event(8))
    assert await asyncio.wait_for(reader, timeout=1) == analytics_update(system_event(8))


async def test_disconnect_removes_the_client() -> None:
    hub = LiveHub(queue_size=4)
    gone, stays = hub.connect("gone"), hub.connect("stays")
    _handle(gone, json.dumps({"type": "subscribe", "market_ids": ["m-1"]}))
    hub.disconnect(gone)
    assert hub.clients == {stays}
    await hub.on_system(system_event())
    await hub.on_market(market_event("m-1"))
    assert gone.queue.empty()
    assert len(drain(stays)) == 1
    hub.disconnect(gone)  # twice is harmless
    assert hub.clients == {stays}


async def test_clients_with_the_same_id_are_distinct_connections() -> None:
    hub = LiveHub(queue_size=4)
    first, second = hub.connect("same"), hub.connect("same")
    assert len(hub.clients) == 2
    hub.disconnect(first)
    assert hub.clients == {second}


# --- client messages (api._handle) -----------------------------------------------------------------


def new_client(size: int = 8) -> Client:
    return Client("c", asyncio.Queue(size))


def test_subscribe_and_unsubscribe() -> None:
    c = new_client()
    _handle(c, '{"type": "subscribe", "market_ids": ["m-1", "m-2"]}')
    _handle(c, '{"type": "subscribe", "market_ids": ["m-3", "m-1"]}')
    assert c.markets == {"m-1", "m-2", "m-3"}
    _handle(c, '{"type": "unsubscribe", "market_ids": ["m-2", "never-subscribed"]}')
    assert c.markets == {"m-1", "m-3"}
    assert c.queue.empty()  # no reply to (un)subscribe


def test_subscribe_stores_ids_as_strings() -> None:
    c = new_client()
    _handle(c, '{"type": "subscribe", "market_ids": [42]}')
    assert c.markets == {"42"}
    _handle(c, '{"type": "unsubscribe", "market_ids": [42]}')
    assert c.markets == set()


def test_ping_gets_pong() -> None:
    c = new_client()
    _handle(c, '{"type": "ping"}')
    assert drain(c) == [{"type": "pong"}]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("not json", "bad message"),
        ("", "bad message"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"market_ids": ["m-1"]}', "bad message"),  # no type
        ('{"type": "subscribe"}', "bad message"),  # no market_ids
        ('{"type": "subscribe", "market_ids": null}', "bad message"),
        ('{"type": "subscribe", "market_ids": 7}', "bad message"),
        ('["subscribe"]', "bad message"),
        ('"ping"', "bad message"),
        ("null", "bad message"),
    ],
)
def test_bad_message_gets_an_error_reply_and_changes_nothing(text: str, detail: str) -> None:
    c = new_client()
    c.markets.add("m-0")
    _handle(c, text)
    replies = drain(c)
    assert len(replies) == 1
    assert replies[0]["type"] == "error"
    assert detail in replies[0]["detail"]
    assert set(replies[0]) == {"type", "detail"}
    assert c.markets == {"m-0"}


def test_error_reply_to_a_full_queue_drops_the_oldest() -> None:
    c = new_client(size=1)
    _handle(c, '{"type": "ping"}')
    _handle(c, "garbage")
    assert [m["type"] for m in drain(c)] == ["error"]
