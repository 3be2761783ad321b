"""The event loop's lag, the collector's pauses and the model runs reach the stats series."""

from __future__ import annotations

import asyncio
import gc
import time
from unittest import mock

from server.loop_watch import LoopWatch
from server.stats import ServerStats


async def test_a_blocked_loop_and_a_collection_are_measured() -> None:
    stats = ServerStats()
    watch = LoopWatch(stats)
    watch.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 (a long synchronous step in a handler blocks every call)
        gc.collect()
        await asyncio.sleep(0.05)
    finally:
        await watch.stop()
    buckets = list(stats._buckets)
    assert max(b.loop_lag_max_s for b in buckets) >= 0.15
    assert sum(b.gc_s for b in buckets) > 0.0
    assert watch._on_gc not in gc.callbacks


def test_the_series_reports_the_largest_lag_and_the_collection_time() -> None:
    stats = ServerStats()
    with mock.patch("server.stats.time.time", return_value=1000.0):
        for lag, collected in ((0.002, 0.0), (0.040, 0.003), (0.001, 0.002)):
            stats.record_loop(lag, collected)
    with mock.patch("server.stats.time.time", return_value=1005.0):
        last = stats.series()[-1]
    assert last.loop_lag_max_ms == 40.0
    assert abs(last.gc_ms - 5.0) < 1e-9


def test_the_series_reports_the_mean_model_run() -> None:
    stats = ServerStats()
    with mock.patch("server.stats.time.time", return_value=1000.0):
        for size, seconds in ((4, 0.010), (1, 0.002), (8, 0.030)):
            stats.record_batch(size, seconds)
    with mock.patch("server.stats.time.time", return_value=1005.0):
        last = stats.series()[-1]
    assert abs(last.mean_run_ms - 14.0) < 1e-9
    assert abs(last.mean_batch_size - 13 / 3) < 1e-9
