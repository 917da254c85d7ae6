"""Live updates without a server: message shapes, channels and sequence numbers, snapshots and bounded
backfill, slow clients marked for disconnection (never silently skipped), and the client-message protocol."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from om_contracts import MarketMetricsUpdated, MarketSummary, SystemMetrics, SystemMetricsUpdated
from om_gateway.access import Role
from om_gateway.auth import Principal
from om_gateway.live import SOURCES, Client, LiveHub, analytics_update, market_update
from om_gateway.ws import handle

T0 = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
SYSTEM, MARKET = SOURCES[0], SOURCES[1]
VIEWER = Principal("u1", Role.viewer, "jwt")


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


def hub_with(*clients: str, queue: int = 16, backfill: int = 100) -> tuple[LiveHub, list[Client]]:
    hub = LiveHub(queue, backfill)
    hub.read_from = {("analytics.system.v1", 0): 0, ("analytics.market.v1", 0): 0}
    return hub, [hub.connect(c, VIEWER) for c in clients]


def test_analytics_update_keeps_the_product_shape() -> None:
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


def test_timestamps_are_utc_with_z_for_any_input_offset() -> None:
    at = datetime(2025, 6, 15, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert analytics_update(system_event(at=at))["timestamp"] == "2025-06-15T12:00:00.123456Z"


def test_market_update_carries_the_market_without_envelope_fields() -> None:
    market = market_update(market_event())["market"]
    assert market["market_id"] == "m-1" and market["current_price"] == 0.6
    assert not {"event_id", "producer", "occurred_at"} & set(market)


def test_updates_are_numbered_by_offset_and_reach_only_subscribers() -> None:
    hub, (a, b) = hub_with("a", "b")
    hub.subscribe(a, "market/m-1")
    hub.subscribe(b, "system")
    a.drain(), b.drain()
    hub.publish(MARKET, market_event("m-1", 0.6), 0, 41)
    hub.publish(MARKET, market_event("m-2", 0.7), 0, 42)
    hub.publish(SYSTEM, system_event(), 0, 7)
    got_a, got_b = a.drain(), b.drain()
    assert [(m["type"], m["channel"], m["seq"]) for m in got_a] == [("market_update", "market/m-1", 41)]
    assert [(m["type"], m["channel"], m["seq"]) for m in got_b] == [("analytics_update", "system", 7)]
    assert {k: v for k, v in got_b[0].items() if k not in ("channel", "seq")} == analytics_update(system_event())


def test_an_update_seen_twice_is_sent_once() -> None:
    hub, (a,) = hub_with("a")
    hub.subscribe(a, "market/m-1")
    a.drain()
    for _ in range(2):
        hub.publish(MARKET, market_event(), 0, 5)
    assert len(a.drain()) == 1


def test_subscribe_gets_a_snapshot_of_the_latest_update() -> None:
    hub, (a, b) = hub_with("a", "b")
    hub.subscribe(a, "market/m-1")
    assert a.drain() == [{"type": "snapshot", "channel": "market/m-1", "seq": None, "reset": False, "message": None}]
    hub.publish(MARKET, market_event(price=0.6), 0, 3)
    hub.publish(MARKET, market_event(price=0.7), 0, 9)
    hub.subscribe(b, "market/m-1")
    (snapshot,) = b.drain()
    assert snapshot["seq"] == 9 and snapshot["message"]["market"]["current_price"] == 0.7


def test_resume_sends_what_came_after_or_a_reset_snapshot_when_history_is_short() -> None:
    hub, (a, b, c) = hub_with("a", "b", "c", backfill=3)
    for offset in (10, 20, 30, 40):
        hub.publish(MARKET, market_event(price=offset / 100), 0, offset)
    hub.subscribe(a, "market/m-1", since=20)
    head, *rest = a.drain()
    assert head == {"type": "backfill", "channel": "market/m-1", "since": 20, "count": 2}
    assert [m["seq"] for m in rest] == [30, 40]
    hub.subscribe(b, "market/m-1", since=5)  # 10 is no longer kept: the backfill would have a hole
    (reset,) = b.drain()
    assert reset["type"] == "snapshot" and reset["reset"] is True and reset["seq"] == 40
    hub.read_from[("analytics.market.v1", 0)] = 35  # a replica that started reading later cannot vouch for 30
    hub.subscribe(c, "market/m-1", since=30)
    assert c.drain()[0]["reset"] is True


def test_a_slow_client_is_marked_for_disconnection_and_others_are_unaffected() -> None:
    hub, (slow, fast) = hub_with("slow", "fast", queue=2)
    for client in (slow, fast):
        hub.subscribe(client, "system")
    fast.drain()
    received = []
    for offset in range(5):
        hub.publish(SYSTEM, system_event(offset), 0, offset)
        received += fast.drain()
    assert [m["seq"] for m in received] == [0, 1, 2, 3, 4]
    assert slow.slow and not slow.queue  # nothing silently skipped: the client is closed with 4008 and resumes
    assert not slow.offer(b"more")


def test_heartbeat_reaches_everyone_and_names_idle_clients() -> None:
    hub, (a, b) = hub_with("a", "b")
    a.last_heard, b.last_heard = 100.0, 10.0
    idle = hub.heartbeat(130.0, "2025-06-15T12:00:00Z", idle_timeout_s=60)
    assert idle == [b]
    assert a.drain() == [{"type": "heartbeat", "timestamp": "2025-06-15T12:00:00Z"}]


def test_heartbeats_in_slots_reach_each_client_once_per_cycle() -> None:
    hub, clients = hub_with(*"abcde")
    for client in clients:
        client.last_heard = 100.0
    for slot in range(3):
        hub.heartbeat(101.0, "2025-06-15T12:00:00Z", idle_timeout_s=60, slot=slot, slots=3)
    assert [len(c.drain()) for c in clients] == [1, 1, 1, 1, 1]


def test_disconnect_removes_every_subscription() -> None:
    hub, (gone, stays) = hub_with("gone", "stays")
    hub.subscribe(gone, "system")
    hub.subscribe(stays, "system")
    hub.disconnect(gone)
    assert hub.subscribers["system"] == {stays} and hub.clients == {stays}


# --- client messages -------------------------------------------------------------------------------


def test_subscribe_unsubscribe_and_ping_are_acknowledged_with_their_id() -> None:
    hub, (c,) = hub_with("c")
    handle(hub, c, '{"type": "subscribe", "id": 1, "channels": ["system", "market/m-1"]}')
    ack, *snapshots = c.drain()
    assert ack == {"type": "ack", "id": 1, "op": "subscribe", "channels": ["system", "market/m-1"]}
    assert [s["channel"] for s in snapshots] == ["system", "market/m-1"]
    handle(hub, c, '{"type": "unsubscribe", "id": "x", "channels": ["system"]}')
    assert c.drain() == [{"type": "ack", "id": "x", "op": "unsubscribe", "channels": ["system"]}]
    assert c.channels == {"market/m-1"}
    handle(hub, c, '{"type": "ping", "id": 9}')
    handle(hub, c, '{"type": "ping"}')
    assert c.drain() == [{"type": "pong", "id": 9}, {"type": "pong"}]


def test_the_first_protocols_market_ids_still_subscribe() -> None:
    hub, (c,) = hub_with("c")
    handle(hub, c, '{"type": "subscribe", "market_ids": ["m-1", 42]}')
    assert c.channels == {"market/m-1", "market/42"}


def test_user_channels_follow_the_matrix() -> None:
    hub, (c,) = hub_with("c")
    handle(hub, c, '{"type": "subscribe", "id": 1, "channels": ["user/u2"]}')
    assert c.drain()[0]["code"] == "forbidden" and not c.channels
    handle(hub, c, '{"type": "subscribe", "id": 2, "channels": ["user/u1"]}')
    assert c.drain()[0]["type"] == "ack" and c.channels == {"user/u1"}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        '{"type": "dance"}',
        '{"channels": ["system"]}',
        '{"type": "subscribe"}',
        '{"type": "subscribe", "channels": "system"}',
        '{"type": "subscribe", "channels": ["nowhere"]}',
        '{"type": "subscribe", "channels": ["market/a b"]}',
        '{"type": "subscribe", "market_ids": 7}',
        '{"type": "subscribe", "channels": ["system"], "since": "yesterday"}',
        '["subscribe"]',
        "null",
    ],
)
def test_bad_messages_get_an_error_and_change_nothing(text: str) -> None:
    hub, (c,) = hub_with("c")
    c.channels.add("system")
    handle(hub, c, text)
    (reply,) = c.drain()
    assert reply["type"] == "error" and reply["code"] == "bad-request"
    assert c.channels == {"system"}
    assert json.loads(json.dumps(reply)) == reply


def test_the_original_endpoint_gets_analytics_update_unchanged() -> None:
    hub, (new, old) = hub_with("new", "old")
    old.legacy = True
    hub.publish(SYSTEM, system_event(1), 0, 7)
    hub.subscribe(old, "system")
    hub.subscribe(new, "system")
    assert old.drain() == [analytics_update(system_event(1))]  # the current state at once, as before
    new.drain()
    hub.publish(SYSTEM, system_event(2), 0, 8)
    assert old.drain() == [analytics_update(system_event(2))]
    assert new.drain()[0]["seq"] == 8


class PairSocket:
    """One end of a real socket pair as a client's direct socket, counting its writes."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.writes = 0

    def can_write(self) -> bool:
        return True

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.ours.sendall(data)

    def received(self) -> list[dict[str, Any]]:
        self.theirs.setblocking(False)
        data, out = self.theirs.recv(1 << 20), []
        while data:
            head = 2 if data[1] < 126 else 4
            size = data[1] if head == 2 else int.from_bytes(data[2:4])
            out.append(json.loads(data[head : head + size]))
            data = data[head + size :]
        return out


def test_a_round_writes_each_clients_updates_together_in_order() -> None:
    hub, (both, market_only, legacy) = hub_with("both", "market", "legacy")
    legacy.legacy = True
    for client, channels in ((both, ["system", "market/m-1"]), (market_only, ["market/m-1"]), (legacy, ["system"])):
        for channel in channels:
            hub.subscribe(client, channel)
        client.drain()
    sockets = [PairSocket() for _ in range(3)]
    for client, pair in zip((both, market_only, legacy), sockets, strict=True):
        client.socket = pair
    hub.gather()
    assert hub.publish(MARKET, market_event("m-1", 0.6), 0, 41) == 2
    assert hub.publish(SYSTEM, system_event(), 0, 7) == 2
    assert sockets[0].writes == 0  # nothing sent before the round ends
    hub.flush()
    assert [s.writes for s in sockets] == [1, 1, 1]
    assert [(m["type"], m["seq"]) for m in sockets[0].received()] == [("market_update", 41), ("analytics_update", 7)]
    assert [m["seq"] for m in sockets[1].received()] == [41]
    assert sockets[2].received() == [analytics_update(system_event())]
    hub.publish(MARKET, market_event("m-1", 0.7), 0, 42)  # outside a round: sent at once
    assert sockets[1].writes == 2
    for pair in sockets:
        pair.ours.close()
        pair.theirs.close()


def test_clients_with_the_same_channels_share_one_group_and_move_when_their_channels_change() -> None:
    hub, (a, b, c) = hub_with("a", "b", "c")
    for client in (a, b, c):
        hub.subscribe(client, "system")
        hub.subscribe(client, "market/m-1")
    assert a.group is b.group is c.group and len(hub.groups) == 1
    hub.unsubscribe(c, "system")
    assert c.group is not a.group and c.group is not None and c.group.channels == {"market/m-1"}
    both, market_only = frozenset({"system", "market/m-1"}), frozenset({"market/m-1"})
    assert {g.channels for g in hub.groups_of["market/m-1"]} == {both, market_only}
    hub.disconnect(c)
    assert c.group is None and len(hub.groups) == 1 and hub.groups_of["market/m-1"] == [a.group]
    hub.disconnect(a)
    hub.disconnect(b)
    assert not hub.groups and not hub.groups_of


def test_a_round_counts_each_update_against_a_busy_clients_queue() -> None:
    hub, (busy,) = hub_with("busy", queue=3)
    hub.subscribe(busy, "system")
    hub.subscribe(busy, "market/m-1")
    busy.drain()
    hub.gather()
    hub.publish(MARKET, market_event("m-1"), 0, 1)
    hub.publish(SYSTEM, system_event(), 0, 2)
    hub.flush()
    assert busy.queued == 2 and len(busy.queue) == 1  # one write, two messages
    hub.gather()
    hub.publish(MARKET, market_event("m-1"), 0, 3)
    hub.publish(SYSTEM, system_event(), 0, 4)
    hub.flush()  # four messages waiting: over the bound of three
    assert busy.slow and not busy.queue and busy.queued == 0


def test_a_large_round_gives_every_other_client_to_the_splitter_and_writes_what_it_leaves_after() -> None:
    """Rounds of `split_from` clients or more: half are handed to the splitter (the send thread), the rest written
    meanwhile, then whatever it gave back, so every client still gets the round's frames exactly once."""
    handed: list[list[Any]] = []

    def splitter(deliveries: list[Any]) -> Any:
        handed.append(deliveries)
        return lambda: deliveries[:1]  # it wrote all but the first itself

    hub, clients = hub_with("a", "b", "c", "d", "e")
    hub.splitter, hub.split_from = splitter, 4
    for client in clients:
        hub.subscribe(client, "system")
        client.drain()
    hub.publish(SYSTEM, system_event(), 0, 1)
    assert len(handed) == 1 and len(handed[0]) == 2  # every other one of the 5
    given_back = handed[0][0][0]
    for client in clients:
        expected = 0 if client in {c for c, _, _ in handed[0][1:]} else 1
        assert len(client.drain()) == expected, client.client_id
    assert given_back in clients

    hub.split_from = 6  # a round below the threshold stays on the event loop
    hub.publish(SYSTEM, system_event(), 0, 2)
    assert len(handed) == 1
    assert all(len(client.drain()) == 1 for client in clients)
