"""Drive the platform's public HTTP API (the gateway) with a simulated world at a chosen rate.

One loop does everything in order, so a market is always created before its first trade and closed
after its last one:

1. send the life-cycle actions that are due (create replacements, close, resolve or cancel);
2. add ``rate * dt`` trade tokens (a token bucket holding at most one second's worth) and send
   the whole tokens as one trade, or as one ``/trades/batch`` when several are due, so a slow
   gateway is met with bigger batches rather than a lower rate;
3. the same for signals at ``signal_rate``;
4. sleep until the next token, life-cycle step or log line is due.

Transient failures (connection errors, timeouts, 408/425/429/502/503/504) are retried with
exponential backoff and jitter for up to ``retry_for_s`` per request, so the simulator can start
before the services have. Every request carries its own id (market, trade and signal ids), so a
retry of a request that did land is an idempotent replay, not a duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from om_cli.credentials import auth_headers
from om_cli.simulator.world import (
    API,
    CancelMarket,
    CloseMarket,
    CreateMarket,
    LifecycleAction,
    ResolveMarket,
    Trade,
    World,
    WorldConfig,
)

log = logging.getLogger("om_cli.simulator")

TRANSIENT_STATUSES = frozenset({408, 425, 429, 502, 503, 504})
DEFAULT_API = "http://127.0.0.1:8000"
MAX_BATCH = 1000  # the gateway's limit per /trades/batch


class SimulationError(RuntimeError):
    """The simulation cannot go on (gateway unreachable, or refusing what the simulator sends)."""


@dataclass
class SimulationStats:
    """What the simulator sent and what came back."""

    markets_created: int = 0
    markets_closed: int = 0
    markets_resolved: int = 0
    markets_cancelled: int = 0
    markets_rejected: int = 0  # creations refused or given up on (replaced by new markets)
    trades_sent: int = 0  # accepted: 201, or 200 for an idempotent replay
    trades_replayed: int = 0
    trades_failed: int = 0
    signals_sent: int = 0
    signals_failed: int = 0
    lifecycle_failed: int = 0  # closes/resolutions/cancellations not accepted
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    http_errors: Counter[int] = field(default_factory=Counter)  # responses >= 400 by status
    connection_errors: Counter[str] = field(default_factory=Counter)  # transport errors by type
    elapsed_s: float = 0.0
    markets_open: int = 0

    @property
    def trade_rate(self) -> float:
        return self.trades_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        errors = {**{str(k): v for k, v in sorted(self.http_errors.items())}, **dict(self.connection_errors)}
        return (
            f"{self.elapsed_s:.1f}s: trades {self.trades_sent} ({self.trade_rate:.1f}/s, "
            f"{self.trades_replayed} replayed, {self.trades_failed} failed), "
            f"signals {self.signals_sent} ({self.signals_failed} failed), "
            f"markets open {self.markets_open} created {self.markets_created} closed {self.markets_closed} "
            f"resolved {self.markets_resolved} cancelled {self.markets_cancelled} "
            f"rejected {self.markets_rejected}, requests {self.requests} retries {self.retries}, "
            f"errors {errors or 'none'}"
        )


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300]
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail if isinstance(d, dict)
        )
    return str(detail)[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class _Runner:
    def __init__(
        self,
        client: httpx.AsyncClient,
        world: World,
        stats: SimulationStats,
        *,
        rate: float,
        signal_rate: float,
        duration_s: float | None,
        max_trades: int | None,
        batch: bool,
        batch_max: int,
        tick_s: float,
        event_time: bool,
        log_every_s: float,
        retry_for_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        stop: asyncio.Event,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self.client = client
        self.world = world
        self.stats = stats
        self.rate = rate
        self.signal_rate = signal_rate
        self.duration_s = duration_s
        self.max_trades = max_trades
        self.batch = batch
        self.batch_max = batch_max
        self.tick_s = tick_s
        self.event_time = event_time
        self.log_every_s = log_every_s
        self.retry_for_s = retry_for_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stop = stop
        self.clock = clock
        self.monotonic = monotonic
        self.started = monotonic()
        # bandit: simulation randomness, seeded for reproducibility; not used for security
        self._jitter = random.Random(f"{world.seed}:jitter")  # never touches the world's streams  # nosec B311
        self._created_any = False
        self._create_failures_in_row = 0
        self._warned: Counter[tuple[str, int]] = Counter()

    # ---- plumbing -----------------------------------------------------------------------------

    def _tick_stats(self) -> None:
        self.stats.elapsed_s = self.monotonic() - self.started
        self.stats.markets_open = len(self.world.open_markets())

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early if asked to stop. True if stopping."""
        if self.stop.is_set():
            return True
        if seconds <= 0:
            await asyncio.sleep(0)
            return self.stop.is_set()
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _warn_rejected(self, what: str, response: httpx.Response) -> None:
        key = (what, response.status_code)
        self._warned[key] += 1
        n = self._warned[key]
        if n <= 3 or n % 100 == 0:
            log.warning("%s rejected (HTTP %d, %d so far): %s", what, response.status_code, n, _detail(response))

    async def _post(self, path: str, body: dict[str, Any] | None, what: str) -> tuple[httpx.Response | None, int]:
        """POST with retries of transient failures. Returns (final response or None if given up, attempts)."""
        deadline = self.monotonic() + self.retry_for_s
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            wait: float | None = None
            try:
                response = await (self.client.post(path, json=body) if body is not None else self.client.post(path))
            except httpx.TransportError as exc:
                self.stats.connection_errors[type(exc).__name__] += 1
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code >= 400:
                    self.stats.http_errors[response.status_code] += 1
                if response.status_code not in TRANSIENT_STATUSES:
                    return response, attempt
                failure = f"HTTP {response.status_code}"
                wait = _retry_after(response)
            backoff = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
            delay = min(wait, self.backoff_max_s) if wait is not None else backoff * self._jitter.uniform(0.5, 1.0)
            if self.monotonic() + delay > deadline:
                log.warning("giving up on %s after %d attempts: %s", what, attempt, failure)
                return None, attempt
            (log.warning if attempt == 1 else log.debug)("%s failed (%s); retrying in %.2fs", what, failure, delay)
            self.stats.retries += 1
            if await self._sleep(delay):
                return None, attempt

    # ---- life cycle ---------------------------------------------------------------------------

    async def _lifecycle(self, actions: list[LifecycleAction]) -> None:
        for action in actions:
            path, body = action.request()
            what = f"{type(action).__name__} {action.market_id}"
            response, attempts = await self._post(path, body, what)
            if isinstance(action, CreateMarket):
                self._created(action, response, attempts)
                continue
            # 409 after a retry means our earlier attempt landed; otherwise the market moved on
            # without us (e.g. the platform closed it at close_at), which the simulator tolerates.
            ok = response is not None and (
                response.status_code == 200 or (response.status_code == 409 and attempts > 1)
            )
            if not ok:
                self.stats.lifecycle_failed += 1
                if response is not None:
                    self._warn_rejected(type(action).__name__, response)
                continue
            if isinstance(action, CloseMarket):
                self.stats.markets_closed += 1
            elif isinstance(action, ResolveMarket):
                self.stats.markets_resolved += 1
            elif isinstance(action, CancelMarket):
                self.stats.markets_cancelled += 1

    def _created(self, action: CreateMarket, response: httpx.Response | None, attempts: int) -> None:
        if response is not None and (response.status_code == 201 or (response.status_code == 409 and attempts > 1)):
            self.stats.markets_created += 1
            self._created_any = True
            self._create_failures_in_row = 0
            return
        self.world.discard(action.market_id)
        self.stats.markets_rejected += 1
        self._create_failures_in_row += 1
        if response is None:
            if not self._created_any:
                raise SimulationError(
                    f"could not create market {action.market_id}: the gateway at {self.client.base_url} "
                    f"did not answer successfully for {self.retry_for_s:g}s"
                )
            return
        if response.status_code == 409 and not self._created_any:
            raise SimulationError(
                f"market {action.market_id} already exists (an earlier run with seed {self.world.seed}?); "
                "use another seed or a run id"
            )
        self._warn_rejected("market creation", response)
        if response.status_code != 409 or self._create_failures_in_row > 3 * self.world.config.markets:
            raise SimulationError(
                f"the gateway refused to create market {action.market_id} "
                f"(HTTP {response.status_code}): {_detail(response)}"
            )

    # ---- trades and signals -------------------------------------------------------------------

    async def _send_trade(self, trade: Trade) -> None:
        path, body = trade.request(event_time=self.event_time)
        response, _ = await self._post(path, body, f"trade {trade.trade_id}")
        if response is not None and response.status_code in (200, 201):
            self.stats.trades_sent += 1
            self.stats.trades_replayed += response.status_code == 200
        else:
            self.stats.trades_failed += 1
            if response is not None:
                self._warn_rejected("trade", response)

    async def _send_trades(self, trades: list[Trade]) -> None:
        if not self.batch:
            for trade in trades:
                await self._send_trade(trade)
            return
        for i in range(0, len(trades), self.batch_max):
            chunk = trades[i : i + self.batch_max]
            if len(chunk) == 1:
                await self._send_trade(chunk[0])
                continue
            body = {"trades": [t.body(event_time=self.event_time) for t in chunk]}
            what = f"batch of {len(chunk)} trades ({chunk[0].trade_id}..{chunk[-1].trade_id})"
            response, _ = await self._post(f"{API}/trades/batch", body, what)
            if response is not None and response.status_code in (200, 201):
                try:
                    recorded = int(response.json().get("recorded", len(chunk)))
                except (ValueError, AttributeError, TypeError):
                    recorded = len(chunk)
                self.stats.trades_sent += len(chunk)
                self.stats.trades_replayed += max(0, len(chunk) - recorded)
            elif response is not None and 400 <= response.status_code < 500:
                # all-or-nothing: one refused trade sinks the batch, so send them one by one
                self._warn_rejected("trade batch", response)
                for trade in chunk:
                    await self._send_trade(trade)
            else:
                self.stats.trades_failed += len(chunk)
                if response is not None:
                    self._warn_rejected("trade batch", response)

    async def _send_signal(self) -> None:
        sig = self.world.next_signal(self.clock())
        if sig is None:
            return
        path, body = sig.request(event_time=self.event_time)
        response, _ = await self._post(path, body, f"signal {sig.signal_id}")
        if response is not None and response.status_code in (200, 201):
            self.stats.signals_sent += 1
        else:
            self.stats.signals_failed += 1
            if response is not None:
                self._warn_rejected("signal", response)

    # ---- the loop -----------------------------------------------------------------------------

    def _trades_left(self) -> float:
        return math.inf if self.max_trades is None else self.max_trades - self.world.trades_made

    async def run(self) -> None:
        trade_tokens = signal_tokens = 0.0
        trade_burst = max(1.0, self.rate)
        signal_burst = max(1.0, self.signal_rate)
        last = self.monotonic()
        next_log = last + self.log_every_s
        while not self.stop.is_set():
            now_mono = self.monotonic()
            elapsed = now_mono - self.started
            if self.duration_s is not None and elapsed >= self.duration_s:
                break
            if self._trades_left() <= 0:
                break
            await self._lifecycle(self.world.due_lifecycle(self.clock()))

            trade_tokens = min(trade_burst, trade_tokens + (now_mono - last) * self.rate)
            signal_tokens = min(signal_burst, signal_tokens + (now_mono - last) * self.signal_rate)
            last = now_mono
            n = int(min(trade_tokens, self._trades_left(), MAX_BATCH if self.batch else math.inf))
            if n > 0:
                trade_tokens -= n
                now = self.clock()  # after the creations above, so no trade predates its market
                trades = [t for t in (self.world.next_trade(now) for _ in range(n)) if t is not None]
                await self._send_trades(trades)
            for _ in range(int(signal_tokens)):
                signal_tokens -= 1
                await self._send_signal()

            if self.monotonic() >= next_log:
                self._tick_stats()
                log.info("simulate %s", self.stats.summary())
                next_log = self.monotonic() + self.log_every_s
            self._tick_stats()

            waits = [next_log - self.monotonic(), 1.0]
            if self.rate > 0:
                waits.append((1.0 - trade_tokens) / self.rate)
            if self.signal_rate > 0:
                waits.append((1.0 - signal_tokens) / self.signal_rate)
            if (event_at := self.world.next_event_at()) is not None:
                waits.append((event_at - self.clock()).total_seconds())
            if self.duration_s is not None:
                waits.append(self.duration_s - (self.monotonic() - self.started))
            # with batching, wake at most every tick_s: high rates then go out as batches, not a request each
            await self._sleep(max(self.tick_s if self.batch else 0.0, min(waits)))

    async def settle(self) -> None:
        await self._lifecycle(self.world.settle_all())


async def simulate(
    base_url: str,
    *,
    rate: float,
    markets: int,
    seed: int,
    duration_s: float | None = None,
    market_lifetime_s: float = 300.0,
    max_trades: int | None = None,
    signal_rate: float | None = None,
    users: int | None = None,
    informed_fraction: float | None = None,
    run_id: str | None = None,
    batch: bool = True,
    batch_max: int = 200,
    tick_s: float = 0.02,
    event_time: bool = True,
    settle_on_exit: bool = False,
    log_every_s: float = 10.0,
    timeout_s: float = 10.0,
    retry_for_s: float = 60.0,
    backoff_initial_s: float = 0.2,
    backoff_max_s: float = 5.0,
    world_config: WorldConfig | None = None,
    stop: asyncio.Event | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] | None = None,
    api_key: str | None = None,
) -> SimulationStats:
    """Run a simulated market world against the gateway at `base_url` and return what was sent.

    Keeps `markets` markets open (each living about `market_lifetime_s`), sends about `rate` trades
    and `signal_rate` (default `rate / 10`) signals per second, and stops after `duration_s`, after
    `max_trades` trades, when `stop` is set, or when cancelled (the cancellation propagates after a
    final log line). Trades due together go out as one `/trades/batch` (at most `batch_max`) unless
    `batch` is false; with batching the loop wakes at most every `tick_s`. `event_time` sends the
    simulator's clock as executed_at/observed_at (otherwise the platform stamps them).
    `world_config` tunes the world; the explicit arguments override its fields. `transport`
    replaces the network (tests use `httpx.MockTransport`). `api_key` is the credential sent (default: see
    `om_cli.credentials.auth_headers`). Raises `SimulationError` if the gateway
    is unreachable for `retry_for_s` at the start or refuses the simulator's markets.
    """
    if rate < 0 or not math.isfinite(rate):
        raise ValueError("rate must be a finite number >= 0")
    if not 1 <= batch_max <= MAX_BATCH:
        raise ValueError(f"batch_max must be within 1..{MAX_BATCH}")
    config = world_config or WorldConfig()
    overrides: dict[str, Any] = {"markets": markets, "market_lifetime_s": market_lifetime_s}
    if users is not None:
        overrides["users"] = users
    if informed_fraction is not None:
        overrides["informed_fraction"] = informed_fraction
    world = World(seed, replace(config, **overrides), run_id=run_id)
    stats = SimulationStats()
    stop = stop or asyncio.Event()
    log.info(
        "simulating %d markets at %g trades/s against %s (seed %d, ids %s-*)",
        markets,
        rate,
        base_url,
        seed,
        world.prefix,
    )
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout_s,
        transport=transport,
        headers={"user-agent": "om-simulator", **auth_headers(api_key)},
    ) as client:
        runner = _Runner(
            client,
            world,
            stats,
            rate=rate,
            signal_rate=rate / 10 if signal_rate is None else signal_rate,
            duration_s=duration_s,
            max_trades=max_trades,
            batch=batch,
            batch_max=batch_max,
            tick_s=tick_s,
            event_time=event_time,
            log_every_s=log_every_s,
            retry_for_s=retry_for_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            stop=stop,
            clock=clock or (lambda: datetime.now(UTC)),
            monotonic=time.monotonic,
        )
        try:
            await runner.run()
            if settle_on_exit:
                stop.clear()  # let the settlement's requests retry even if a stop ended the run
                await runner.settle()
        except asyncio.CancelledError:
            runner._tick_stats()
            log.info("simulation cancelled after %s", stats.summary())
            raise
        runner._tick_stats()
    log.info("simulation finished after %s", stats.summary())
    return stats


# ---- command line -----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `om simulate` options."""
    parser.add_argument(
        "--api",
        default=os.environ.get("OM_API_URL", DEFAULT_API),
        help="gateway base URL (default: $OM_API_URL or %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="credential to send (default: $OM_API_KEY, else the key `om up` saved in .om/credentials/)",
    )
    parser.add_argument("--rate", type=_non_negative_float, default=10.0, help="trades per second (default 10)")
    parser.add_argument("--markets", type=_positive_int, default=8, help="markets kept open (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; ids are sim-<seed>-<n> (default 1)")
    parser.add_argument("--duration", type=_positive_float, default=None, help="stop after this many seconds")
    parser.add_argument("--max-trades", type=_positive_int, default=None, help="stop after this many trades")
    parser.add_argument(
        "--market-lifetime",
        type=_positive_float,
        default=300.0,
        help="seconds from a market's creation to its close (+-20%%; default 300)",
    )
    parser.add_argument(
        "--signal-rate", type=_non_negative_float, default=None, help="signals per second (default rate / 10)"
    )
    parser.add_argument("--users", type=_positive_int, default=500, help="size of the user population")
    parser.add_argument(
        "--informed-fraction",
        type=_fraction,
        default=0.35,
        help="share of users who are informed (default 0.35)",
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="extra id part (sim-<seed>-<run-id>-<n>) to rerun a seed on the same data",
    )
    parser.add_argument("--no-batch", dest="batch", action="store_false", help="never use /trades/batch")
    parser.add_argument("--batch-max", type=_positive_int, default=200, help="largest trade batch (default 200)")
    parser.add_argument(
        "--no-event-time",
        dest="event_time",
        action="store_false",
        help="let the platform stamp executed_at/observed_at instead of sending the simulator's clock",
    )
    parser.add_argument(
        "--settle-on-exit", action="store_true", help="close and resolve the remaining markets when stopping"
    )
    parser.add_argument("--log-every", type=_positive_float, default=10.0, help="seconds between summary lines")
    parser.add_argument("--http-timeout", type=_positive_float, default=10.0, help="per-request timeout (s)")
    parser.add_argument(
        "--retry-for", type=_non_negative_float, default=60.0, help="retry a failing request this long (s)"
    )
    offline = parser.add_argument_group("offline history (no platform needed)")
    offline.add_argument(
        "--history",
        type=_positive_int,
        default=None,
        metavar="N",
        help="write N settled markets' complete event streams to --out instead of driving a platform",
    )
    offline.add_argument("--out", type=Path, default=Path("history"), help="folder for --history (default history)")
    offline.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="file format for --history")
    offline.add_argument(
        "--trades-per-market",
        type=_positive_float,
        default=None,
        help="average trades over a market's life for --history (default 120; fewer import faster)",
    )


def write_history_from_args(args: argparse.Namespace) -> int:
    """`om simulate --history N --out DIR`: N settled markets' events in the generic format, offline."""
    from tqdm import tqdm

    from om_cli.history.format import HistoryWriter, ResolutionRecord
    from om_cli.history.simulated import HistoryConfig, simulate_history
    from om_cli.history.stats import history_stats

    started = time.monotonic()
    kept: list[Any] = []
    world = WorldConfig(users=args.users, informed_fraction=args.informed_fraction)
    history = HistoryConfig()
    if args.trades_per_market is not None:
        history = replace(history, trades_per_market=args.trades_per_market)
    with HistoryWriter(args.out, args.format) as writer, tqdm(total=args.history, unit="market") as bar:
        for record in simulate_history(args.history, args.seed, history=history, world=world):
            writer.write(record)
            kept.append(record)
            if isinstance(record, ResolutionRecord):
                bar.update()
    elapsed = time.monotonic() - started
    print(
        f"wrote {dict(writer.counts)} to {args.out} in {elapsed:.1f}s ({60 * args.history / elapsed:.0f} markets/min)"
    )
    for line in history_stats(kept).lines():
        print(line)
    return 0


async def run_from_args(args: argparse.Namespace) -> int:
    """Run `om simulate` with parsed arguments; returns the exit code. Ctrl-C stops cleanly (twice aborts)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed: list[tuple[signal.Signals, Any]] = []

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        else:
            log.info("stopping (again to abort)")
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal)
            installed.append((sig, previous))
    try:
        stats = await simulate(
            args.api,
            rate=args.rate,
            markets=args.markets,
            seed=args.seed,
            duration_s=args.duration,
            market_lifetime_s=args.market_lifetime,
            max_trades=args.max_trades,
            signal_rate=args.signal_rate,
            users=args.users,
            informed_fraction=args.informed_fraction,
            run_id=args.run_id,
            batch=args.batch,
            batch_max=args.batch_max,
            event_time=args.event_time,
            settle_on_exit=args.settle_on_exit,
            log_every_s=args.log_every,
            timeout_s=args.http_timeout,
            retry_for_s=args.retry_for,
            stop=stop,
            api_key=args.api_key,
        )
    except (SimulationError, ValueError) as exc:
        log.error("simulation failed: %s", exc)
        return 2
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, previous)
    print(f"simulated {stats.summary()}")
    return 0
