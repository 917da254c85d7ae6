"""Keeps Python's cyclic garbage collector from re-walking a service's start-up heap on every full collection.

A started service holds 100,000-135,000 objects the collector tracks (its imported modules, FastAPI's and pydantic's
schemas, the contracts, the app). pydantic-core's validators and serializers are slow to traverse: a full collection
of that heap takes 80-100 ms of CPU (0.2-1.1 s of wall time on a busy 2-core machine), and each one holds the event
loop, so every event and request in flight waits for it. They were the longest event-loop stalls that
`om_event_loop_lag_seconds` recorded in every service during the latency benchmark (issue 9).

So once the service has started, and once more after a warm-up (lazy imports, first requests), the heap is
collected and what is left is frozen (`gc.freeze()`): later collections skip it; reference counting still frees
those objects as usual, only a cycle among them would wait for `unfreeze`, which leaving `frozen()` does (so a test
process that starts many services in turn does not keep their cycles).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)


def freeze(why: str) -> None:
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "froze %d long-lived objects out of garbage collection (%s; the collection took %.0f ms)",
        gc.get_freeze_count(),
        why,
        (time.perf_counter() - started) * 1000,
    )


@contextlib.asynccontextmanager
async def frozen(warm_up_s: float | None) -> AsyncIterator[None]:
    """Freeze the heap now and again after `warm_up_s` (None: not again); unfreeze on leaving."""
    freeze("started")
    again = asyncio.create_task(_freeze_after(warm_up_s)) if warm_up_s is not None else None
    try:
        yield
    finally:
        if again is not None:
            again.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await again
        gc.unfreeze()


async def _freeze_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    freeze("warmed up")
