"""WebSocket fan-out benchmark: one gateway process, N clients spread over several client processes (each its own
Python, so client CPU is measured apart from the gateway's), each client subscribed to `system` and one market
channel; one update per second per channel, all published together at the top of each second (a burst, as
analytics' snapshot rounds publish), each stamped with its event time. Prints connected clients, messages/s,
delivery (of the updates whose event time falls in the measured window, the share every subscriber received),
p50/p99 delivery delay (event time → received, snapshots excluded), the gateway's own split of it, its CPU and RSS
per client, and the client processes' CPU.

    make bench-ws                                   # 10,000 clients, 2 client processes, 30 s
    make bench-ws BENCH_WS_ARGS="--clients 2000 --duration 10"

The clients are lean on purpose, so that the benchmark measures the server and not itself: plain non-blocking
sockets on one epoll per process, polled every 5 ms rather than woken by each of the gateway's writes (a woken
client on the same cores preempts the gateway mid-round; one on another machine would not), no asyncio and no
WebSocket library (a minimal RFC 6455 client: handshake, masked client frames, pong), and the arrival time of each
update is the kernel's receive timestamp of the segment that carried it (SO_TIMESTAMPNS), not the moment the
client process got round to reading it. On a
2-core machine the client processes compete with the gateway for the same cores; with the kernel's timestamp a
client that is scheduled late does not add its own wait to the figure. The time at which the client process read
each update is printed as well ("read by client"), which includes that wait.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CLK = os.sysconf("SC_CLK_TCK")
#: Linux: receive timestamps as a struct timespec in the ancillary data of recvmsg (SO_TIMESTAMPNS_OLD).
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("qq")
CONNECT_AT_ONCE = 256  # handshakes in flight per client process
HANDSHAKE_TIMEOUT_S = 60.0
ATTEMPTS = 5  # a loaded machine refuses or times out a few handshakes: retry them
#: Between polls of the sockets: clients on another machine do not preempt the gateway on every write it makes;
#: clients sleeping in epoll_wait on the same cores would (each write wakes one), so they look every 5 ms instead.
#: The kernel's receive timestamps keep the delivery delay exact; "read by client" includes up to this wait.
POLL_S = 0.005
PING_EVERY_S = 30.0  # keeps each client under the gateway's idle timeout (120 s) in long runs
SKIPPED = (b'{"type":"snapshot"', b'{"type":"ack"', b'{"type":"heartbeat"', b'{"type":"pong"')


# --- client process: a minimal WebSocket client per socket, all on one epoll ---------------------------------


def client_frame(data: str | bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 §5.3): text, or with `opcode` a control frame's payload."""
    payload = data.encode() if isinstance(data, str) else data
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    head = bytes((0x80 | opcode, 0x80 | size)) if size < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
    return head + key + masked


PING = client_frame('{"type":"ping"}')


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames (opcode, payload) at the start of `buf`, and what is left of an incomplete one."""
    frames = []
    at, end = 0, len(buf)
    while end - at >= 2:
        size = buf[at + 1] & 0x7F
        head = 2
        if size == 126:
            if end - at < 4:
                break
            size, head = int.from_bytes(buf[at + 2 : at + 4]), 4
        elif size == 127:
            if end - at < 10:
                break
            size, head = int.from_bytes(buf[at + 2 : at + 10]), 10
        if end - at < head + size:
            break
        frames.append((buf[at] & 0x0F, buf[at + head : at + head + size]))
        at += head + size
    return frames, buf[at:]


@dataclass(eq=False)
class Conn:
    index: int
    market: int
    sock: socket.socket
    state: str = "connecting"  # → "handshake" → "welcome" → "open"
    buf: bytes = b""
    deadline: float = 0.0


@dataclass
class Tally:
    """What one client process saw of the updates whose event time is in the window."""

    received: int = 0
    arrival_ms: Counter[int] = field(default_factory=Counter)  # event time → the kernel's receive timestamp
    read_ms: Counter[int] = field(default_factory=Counter)  # event time → read by the client process
    closes: Counter[int] = field(default_factory=Counter)


class Clients:
    def __init__(self, url: str, count: int, first: int, markets: int) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.count, self.first, self.markets = count, first, markets
        self.epoll = select.epoll()
        self.conns: dict[int, Conn] = {}  # open ones, by file descriptor
        self.dropped: list[Conn] = []
        self.failed = 0
        self.window = (float("inf"), float("inf"))
        self.tally = Tally()
        self.stamps: dict[bytes, float] = {}

    # connecting

    def connect_all(self) -> None:
        waiting = [(0.0, i, 0) for i in range(self.count)]  # (not before, index, attempt)
        opening: dict[int, tuple[Conn, int]] = {}
        opened = 0
        next_ping = time.monotonic() + PING_EVERY_S
        while waiting or opening:
            now = time.monotonic()
            if now >= next_ping:  # a slow ramp must not leave the first clients idle for the gateway's timeout
                next_ping = now + PING_EVERY_S
                self._ping()
            while waiting and len(opening) < CONNECT_AT_ONCE and waiting[0][0] <= now:
                _, i, attempt = waiting.pop(0)
                conn = self._start(i)
                opening[conn.sock.fileno()] = (conn, attempt)
            for fd, events in self.epoll.poll(0.05):
                if fd in self.conns:  # open already: its ack and snapshots (before the window: not counted)
                    self._read(self.conns[fd])
                    continue
                conn, attempt = opening[fd]
                try:
                    if self._advance(conn, events):
                        del opening[fd]
                        opened += 1
                except OSError:
                    del opening[fd]
                    self._retry(conn, attempt, waiting)
            for fd, (conn, attempt) in list(opening.items()):
                if now > conn.deadline:
                    del opening[fd]
                    self._retry(conn, attempt, waiting)
        assert opened + self.failed == self.count

    def _start(self, i: int) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        conn = Conn(i, (self.first + i) % self.markets, sock, deadline=time.monotonic() + HANDSHAKE_TIMEOUT_S)
        self.epoll.register(sock.fileno(), select.EPOLLOUT)
        if sock.connect_ex(self.address) not in (0, errno.EINPROGRESS):
            conn.deadline = 0.0  # failed at once: retried as a timeout
        return conn

    def _retry(self, conn: Conn, attempt: int, waiting: list[tuple[float, int, int]]) -> None:
        self.epoll.unregister(conn.sock.fileno())
        conn.sock.close()
        if attempt + 1 < ATTEMPTS:
            waiting.append((time.monotonic() + 1 + attempt, conn.index, attempt + 1))
            waiting.sort()
        else:
            self.failed += 1  # counted out, so the others still start (the report shows how many connected)

    def _advance(self, conn: Conn, events: int) -> bool:
        """One step of a connection's opening; True once it is open and subscribed."""
        sock = conn.sock
        if conn.state == "connecting":
            if events & (select.EPOLLERR | select.EPOLLHUP) or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise OSError("connect failed")
            sock.send(self.request)
            self.epoll.modify(sock.fileno(), select.EPOLLIN)
            conn.state = "handshake"
            return False
        data = sock.recv(1 << 16)
        if not data:
            raise OSError("closed while opening")
        conn.buf += data
        if conn.state == "handshake":
            head, sep, rest = conn.buf.partition(b"\r\n\r\n")
            if not sep:
                return False
            if not head.startswith(b"HTTP/1.1 101"):
                raise OSError(f"handshake refused: {head[:40]!r}")
            conn.buf, conn.state = rest, "welcome"
        frames, conn.buf = split_frames(conn.buf)
        if not frames:
            return False
        if frames[0][0] != 0x1 or b'"welcome"' not in frames[0][1]:
            raise OSError(f"no welcome: {frames[0]!r}")  # (e.g. a close for too many connections)
        channels = ["system", f"market/bench-{conn.market}"]
        sock.send(client_frame(json.dumps({"type": "subscribe", "id": conn.index, "channels": channels})))
        conn.state = "open"
        self.conns[sock.fileno()] = conn
        return True

    # measuring

    def run(self, stdin: int, pings_together: bool = False) -> dict[str, Any]:
        """Read every socket until the window and its grace period are over; return what was seen."""
        self.epoll.register(stdin, select.EPOLLIN)
        cpu0 = cpu1 = None
        end = float("inf")
        # Each client pings every PING_EVERY_S at its own phase, as independent clients would; with
        # `pings_together` all at once (as this bench did until stop 14), a burst that stalls the gateway.
        order, pinged, started = list(self.conns.values()), 0, time.time()
        while (now := time.time()) < end:
            if cpu0 is None and now >= self.window[0]:
                cpu0 = _cpu_self()
            if cpu1 is None and now >= self.window[1]:
                cpu1 = _cpu_self()
            due = int((now - started) / PING_EVERY_S * len(order))
            if pings_together:
                due -= due % len(order)
            for i in range(pinged, due):
                conn = order[i % len(order)]
                if conn.sock.fileno() in self.conns:  # (-1 once closed)
                    conn.sock.send(PING)
            pinged = max(pinged, due)
            events = self.epoll.poll(0)
            if not events:  # not woken by each write: a sleeping client would be, and would preempt the gateway
                time.sleep(POLL_S)
            for fd, _ in events:
                if fd == stdin:  # "go <t0> <t1> <until>"
                    _, t0, t1, until = os.read(stdin, 256).split()
                    self.window, end = (float(t0), float(t1)), float(until)
                    self.epoll.unregister(stdin)
                else:
                    self._read(self.conns[fd])
        connected: Counter[int] = Counter(c.market for c in [*self.conns.values(), *self.dropped])
        return {
            "connected": connected.total(),
            "failed": self.failed,
            "per_market": {str(m): n for m, n in connected.items()},
            "received": self.tally.received,
            "arrival_ms": self.tally.arrival_ms,
            "read_ms": self.tally.read_ms,
            "closes": self.tally.closes,
            "cpu_s": (cpu1 or _cpu_self()) - (cpu0 or 0.0),
        }

    def _ping(self) -> None:
        for conn in self.conns.values():
            conn.sock.send(PING)

    def _read(self, conn: Conn) -> None:
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(1 << 18, 64)
        except OSError:
            data, ancillary = b"", []
        read_at = time.time()
        if not data:
            self._drop(conn, 1006)
            return
        arrived = read_at
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack_from(raw)
                arrived = seconds + nanoseconds / 1e9  # (of the segment read last: never early)
        frames, conn.buf = split_frames(conn.buf + data if conn.buf else data)
        t0, t1 = self.window
        tally = self.tally
        for opcode, payload in frames:
            if opcode == 0x1:
                if payload.startswith(SKIPPED):
                    continue
                at = payload.find(b'"timestamp":"') + 13
                stamp = payload[at : payload.index(b'"', at)]
                event = self.stamps.get(stamp)
                if event is None:
                    event = self.stamps[stamp] = datetime.fromisoformat(stamp.decode()).timestamp()
                if t0 <= event < t1:
                    tally.received += 1
                    tally.arrival_ms[round((arrived - event) * 1000)] += 1
                    tally.read_ms[round((read_at - event) * 1000)] += 1
            elif opcode == 0x9:  # ping: pong with the same payload
                conn.sock.send(client_frame(payload, opcode=0xA))
            elif opcode == 0x8:
                self._drop(conn, int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005)
                return

    def _drop(self, conn: Conn, code: int) -> None:
        """A connection closed by the gateway (or lost): counted by close code, and still counted as a subscriber
        whose updates were due."""
        self.tally.closes[code] += 1
        del self.conns[conn.sock.fileno()]
        self.epoll.unregister(conn.sock.fileno())
        conn.sock.close()
        self.dropped.append(conn)


def run_clients(url: str, count: int, first: int, markets: int, pings_together: bool = False) -> None:
    clients = Clients(url, count, first, markets)
    clients.connect_all()
    print("connected", flush=True)
    print(json.dumps(clients.run(sys.stdin.fileno(), pings_together)), flush=True)
    sys.stdin.read()  # connections stay open until the parent has read the gateway's figures and ends this


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the parent ---------------------------------------------------------------------------------------


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


async def publish_updates(bootstrap: str, markets: int, stop: asyncio.Event, sent: list[tuple[float, int]]) -> None:
    """At the top of each second (on a fixed schedule, so a late tick does not shift the later ones): one update on
    `system` and one on each market channel, each stamped with the time it is built; `sent` gets (event time,
    market or -1 for system) of each."""
    from aiokafka import AIOKafkaProducer

    from om_contracts import MarketMetricsUpdated, SystemMetrics, SystemMetricsUpdated, encode

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    tick = 0
    start = time.time()
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            system = SystemMetricsUpdated(
                occurred_at=now, producer="bench",
                system_metrics=SystemMetrics(total_users=1, active_users=1, total_markets=markets,
                                             active_markets=markets, total_volume_24h=1.0, total_trades_24h=tick),
                top_markets=[],
            )  # fmt: skip
            futures = [await producer.send("analytics.system.v1", encode(system), key=b"system")]
            sent.append((now.timestamp(), -1))
            for m in range(markets):
                now = datetime.now(UTC)
                update = MarketMetricsUpdated(
                    occurred_at=now, producer="bench", market_id=f"bench-{m}", status="open",
                    current_price=0.5, price_change_24h=0.0, volume_24h=1.0, total_volume=1.0, trade_count=tick,
                    participant_count=1,
                )  # fmt: skip
                futures.append(await producer.send("analytics.market.v1", encode(update), key=f"bench-{m}".encode()))
                sent.append((now.timestamp(), m))
            await asyncio.gather(*futures)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick - time.time()))
    finally:
        await producer.stop()


def percentile(histogram: Counter[int], q: float) -> float:
    """The q-quantile of a histogram of whole milliseconds."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank, seen = q * (total - 1), 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return float(value)
    return float(max(histogram))


async def bench(args: argparse.Namespace) -> None:
    import httpx

    from om_cli.credentials import ensure_admin_key
    from om_cli.embedded import Ports, free_port, start_infrastructure

    markets = args.markets or max(1, args.clients // 100)
    sent: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as data:
        infra = start_infrastructure(Path(data), Ports(free_port(), free_port(), free_port()), environ={})
        key_file, key = ensure_admin_key(Path(data))
        port = free_port()
        env = {
            **os.environ, **infra.env(), "GATEWAY_HTTP_PORT": str(port), "GATEWAY_ADMIN_API_KEY_FILE": str(key_file),
            "GATEWAY_WS_MAX_CONNECTIONS_PER_PRINCIPAL": str(args.clients + 10),
            "GATEWAY_WS_MAX_CONNECTIONS_PER_IP": str(args.clients + 10), "GATEWAY_LOG_LEVEL": "WARNING",
            "OTEL_SDK_DISABLED": "true",
        }  # fmt: skip
        gateway = subprocess.Popen([sys.executable, "-m", "om_gateway"], env=env, stdin=subprocess.DEVNULL)  # noqa: ASYNC220 - starts and returns
        clients: list[subprocess.Popen[str]] = []
        stop = asyncio.Event()
        producer: asyncio.Task[None] | None = None
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient() as http:
                for _ in range(600):
                    try:
                        if (await http.get(f"{base}/ready", timeout=1)).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
            producer = asyncio.create_task(publish_updates(infra.kafka_bootstrap_servers, markets, stop, sent))
            _, rss_idle = _proc(gateway.pid)
            url = f"ws://127.0.0.1:{port}/api/v1/ws?token={key}"
            per = -(-args.clients // args.processes)
            started = time.monotonic()
            for p in range(args.processes):
                count = min(per, args.clients - p * per)
                cmd = [sys.executable, "-m", "bench.ws", "--client", url, str(count), str(p * per), str(markets)]
                cmd += ["--pings-together"] if args.pings == "together" else []
                clients.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # noqa: ASYNC220
            for client in clients:
                line = await asyncio.to_thread(client.stdout.readline)  # type: ignore[union-attr]
                assert line.strip() == "connected", f"a client process failed: {line!r}"
            ramp = time.monotonic() - started
            t0 = time.time() + 2.0
            t1 = t0 + args.duration
            until = t1 + args.grace
            for client in clients:
                client.stdin.write(f"go {t0} {t1} {until}\n")  # type: ignore[union-attr]
                client.stdin.flush()  # type: ignore[union-attr]
            await asyncio.sleep(max(0.0, t0 - time.time()))
            cpu0, _ = _proc(gateway.pid)
            metrics0 = await _metrics(base, key)
            await asyncio.sleep(max(0.0, t1 - time.time()))
            cpu1, rss = _proc(gateway.pid)
            await asyncio.sleep(max(0.0, until - time.time()))
            results = []
            for client in clients:
                out = await asyncio.to_thread(client.stdout.readline)  # type: ignore[union-attr]
                results.append(json.loads(out))
            # Before the clients exit: their 10,000 closes at once would stall the gateway, and its histograms
            # (the event loop's lag) would count that stall, which is outside the window.
            metrics = _subtract(await _metrics(base, key), metrics0)
            disconnect = await mass_disconnect(base, key, clients, connected=sum(r["connected"] for r in results))
        finally:
            stop.set()
            if producer is not None:
                await producer
            for client in clients:
                client.kill()
                client.wait()
            gateway.terminate()
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:  # a loaded machine may not close 10,000 sockets in time
                gateway.kill()
                gateway.wait()
            infra.stop()

    connected = sum(r["connected"] for r in results)
    failed = sum(r["failed"] for r in results)
    per_market: Counter[int] = Counter()
    arrival: Counter[int] = Counter()
    read: Counter[int] = Counter()
    closes: Counter[str] = Counter()
    for r in results:
        per_market.update({int(m): n for m, n in r["per_market"].items()})
        arrival.update({int(ms): n for ms, n in r["arrival_ms"].items()})
        read.update({int(ms): n for ms, n in r["read_ms"].items()})
        closes.update(r["closes"])
    in_window = [m for at, m in sent if t0 <= at < t1]
    expected = sum(connected if m < 0 else per_market[m] for m in in_window)
    received = sum(r["received"] for r in results)
    client_cpu = sum(r["cpu_s"] for r in results)
    gateway_cpu = cpu1 - cpu0

    def quantiles(histogram: Counter[int]) -> str:
        return (
            f"p50 {percentile(histogram, 0.5):.0f} ms   p99 {percentile(histogram, 0.99):.0f} ms   "
            f"max {max(histogram, default=0):.0f} ms"
        )

    print(f"WebSocket fan-out: {connected} clients over {args.processes} client processes ({failed} failed to "
          f"connect), {markets} markets, {args.duration:g} s measured (connect ramp {ramp:.1f} s)")  # fmt: skip
    print(f"  messages received   {received:,} ({received / args.duration:,.0f}/s): {received / max(1, expected):.2%} "
          f"of the {expected:,} updates with event time in the window, by {args.grace:g} s after it")  # fmt: skip
    print(f"  delivery delay      {quantiles(arrival)}   (event time -> arrived at the client's socket)")
    print(f"  read by client      {quantiles(read)}   (event time -> read by the client process)")
    print(f"  in the gateway      {_split(metrics)}")
    if closes:
        print(f"  connections closed  {dict(closes)} (by close code; 4008: too slow)")
    per_message = gateway_cpu / max(1, received) * 1e6
    print(f"  gateway CPU         {gateway_cpu / args.duration:.0%} of a core; {per_message:.1f} µs per message")
    print(f"  gateway RSS         {rss:.0f} MiB; {(rss - rss_idle) * 1024 / max(1, connected):.1f} KiB per client")
    print(f"  client processes    {client_cpu / args.duration:.0%} of a core in all")
    print(f"  mass disconnect     {disconnect}")
    print("  (one 2-core machine: the gateway, the clients, Kafka and the producer share it)")


async def mass_disconnect(base: str, key: str, clients: list[subprocess.Popen[str]], connected: int) -> str:
    """End the client processes at once (the kernel closes all their sockets) and measure how long the gateway's
    event loop is held while it closes them: a probe request every 20 ms (its slowest answer is the stall a client
    of the gateway would see) and the runtime's event-loop lag and stall count over the time until the gateway has
    no connection left."""
    import httpx

    before = await _metrics(base, key)
    started = time.monotonic()
    for client in clients:
        client.kill()
    slowest = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal slowest
        async with httpx.AsyncClient(timeout=120) as http:
            while not done.is_set():
                sent = time.monotonic()
                try:
                    await http.get(f"{base}/health")
                except httpx.HTTPError:
                    pass
                slowest = max(slowest, time.monotonic() - sent)
                await asyncio.sleep(0.02)

    probing = asyncio.create_task(probe())
    after: dict[str, float] = {}
    while time.monotonic() - started < 120:
        await asyncio.sleep(0.25)
        after = await _metrics(base, key)
        if after.get("gateway_ws_connections", 1) <= 0:
            break
    closed_in = time.monotonic() - started
    await asyncio.sleep(3.0)  # the gateway collects once the closes have paused for a second
    done.set()
    await probing
    window = _subtract(await _metrics(base, key), before)
    stalls = window.get('om_event_loop_stalls_total{app_name="gateway"}', 0.0)
    collections = window.get("gateway_ws_gc_full_collections", float("nan"))
    collection_ms = window.get("gateway_ws_gc_full_collection_seconds", float("nan")) * 1000
    collection_cpu_ms = window.get("gateway_ws_gc_full_collection_cpu_seconds", float("nan")) * 1000
    lag = "om_event_loop_lag_seconds"
    return (
        f"{connected:,} clients gone in {closed_in:.1f} s (connections left "
        f"{after.get('gateway_ws_connections', float('nan')):.0f}); slowest probe request {slowest * 1000:,.0f} ms; "
        f"event loop late by p99 {_quantile(window, lag, 0.99)}, max {_quantile(window, lag, 1.0)}; "
        f"{stalls:.0f} stalls over 250 ms; {collections:.0f} full garbage collection(s) taking {collection_ms:,.0f} ms "
        f"({collection_cpu_ms:,.0f} ms of CPU)"
    )


async def _metrics(base: str, key: str) -> dict[str, float]:
    """The gateway's histogram buckets that `_split` reads."""
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:  # a saturated gateway answers late
        try:
            text = (await http.get(f"{base}/metrics", headers={"authorization": f"Bearer {key}"})).text
        except httpx.HTTPError:
            return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("gateway_live_", "gateway_ws_", "om_event_loop_")) and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _subtract(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


def _quantile(metrics: dict[str, float], metric: str, q: float) -> str:
    """The bucket bound of a Prometheus histogram's q-quantile."""
    buckets = sorted(
        (float(name.split('le="')[1].split('"')[0]), count)
        for name, count in metrics.items()
        if name.startswith(f"{metric}_bucket{{")
    )
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return "n/a"
    bound = next(le for le, count in buckets if count >= q * total)
    return f"≤ {bound * 1000:,.0f} ms" if bound != float("inf") else f"> {buckets[-2][0] * 1000:,.0f} ms"


def _split(metrics: dict[str, float]) -> str:
    """Medians and 99th percentiles from the gateway's histograms, over the window: event time → read from Kafka,
    and a read's round (every subscriber written or queued)."""

    def quantile(metric: str, q: float) -> str:
        return _quantile(metrics, metric, q)

    read, rounds = "gateway_live_read_lag_seconds", "gateway_live_round_seconds"
    stalls = "om_event_loop_lag_seconds"  # the runtime's probe, which every service has
    return (
        f"read from Kafka p50 {quantile(read, 0.5)}, p99 {quantile(read, 0.99)} after event time; "
        f"{metrics.get(f'{rounds}_count', 0):.0f} rounds (one per read) taking p50 {quantile(rounds, 0.5)}, "
        f"p99 {quantile(rounds, 0.99)}; event loop late by p99 {quantile(stalls, 0.99)}, max "
        f"{quantile(stalls, 1.0)}"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--client":
        url, count, first, markets = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        run_clients(url, count, first, markets, "--pings-together" in argv)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2, help="client processes (at most 20,000 sockets each)")
    parser.add_argument("--markets", type=int, default=0, help="market channels (default: one per 100 clients)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured after all are connected")
    parser.add_argument(
        "--pings",
        choices=("spread", "together"),
        default="spread",
        help="each client's ping every 30 s at its own phase, or all clients' in the same instant",
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds after the window in which its updates may still arrive"
    )
    asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
