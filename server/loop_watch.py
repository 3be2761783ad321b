"""How late the event loop runs and how long the garbage collector stops the process.

Every RPC handler, the batcher's hand-offs and the Feedback acknowledgements run on one
asyncio loop: while it is busy (or the collector holds the interpreter), calls wait
before any handler's clock starts, so the server's own latency figures cannot show it.
This measures it from inside: a task that asks to wake every TICK_S records how late it
woke (the loop's lag), and ``gc.callbacks`` time every collection. Both go to the stats
series (the largest lag and the collection time per 5-second interval: GetServerStats and
the soak) and to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from server import metrics
from server.stats import ServerStats

TICK_S = 0.01


class LoopWatch:
    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats
        self._task: asyncio.Task[None] | None = None
        self._gc_started = 0.0
        self._gc_pending_s = 0.0
        """Collection time not yet handed to the stats (collections run on any thread; only
        the loop's task touches the stats)."""

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-watch")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_started
        self._gc_pending_s += pause
        metrics.GC_PAUSE.labels(generation=str(info.get("generation", ""))).observe(pause)

    async def _watch(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lag = max(0.0, time.perf_counter() - asked - TICK_S)
            metrics.LOOP_LAG.observe(lag)
            gc_s, self._gc_pending_s = self._gc_pending_s, 0.0
            self._stats.record_loop(lag, gc_s)
