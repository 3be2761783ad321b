"""Live counters for GetServerStats and the console.

- The headline figures (QPS, p50/p99, error rate, mean batch, feedback/s) cover the last
  minute exactly: a sliding window of the requests themselves.
- ``series()`` covers the last ten minutes in SERIES_STEP_S buckets, for the console's
  charts. A bucket keeps counts and a latency histogram (log-spaced bins), not the
  requests, so its memory is fixed whatever the load.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from server import metrics

WINDOW_S = 60.0
SERIES_STEP_S = 5
SERIES_BUCKETS = 120
"""Ten minutes of 5-second buckets."""
_EDGES_MS = list(np.geomspace(0.05, 60_000.0, 96))
"""Upper edges of the latency histogram's bins (ms); a last bin holds anything slower."""


@dataclass
class _Bucket:
    index: int
    """Wall-clock time // SERIES_STEP_S."""
    requests: int = 0
    errors: int = 0
    batches: int = 0
    batched: int = 0
    run_s: float = 0.0
    feedback: int = 0
    loop_lag_max_s: float = 0.0
    gc_s: float = 0.0
    latency_bins: list[int] = field(default_factory=lambda: [0] * (len(_EDGES_MS) + 1))

    def percentile_ms(self, q: float) -> float:
        if not self.requests:
            return 0.0
        wanted = q * self.requests
        seen = 0
        for i, count in enumerate(self.latency_bins):
            seen += count
            if seen >= wanted:
                return float(_EDGES_MS[min(i, len(_EDGES_MS) - 1)])
        return float(_EDGES_MS[-1])


@dataclass(frozen=True)
class Sample:
    at_ms: int
    recommend_qps: float
    latency_p50_ms: float
    latency_p99_ms: float
    error_rate: float
    feedback_events_per_s: float
    mean_batch_size: float
    loop_lag_max_ms: float = 0.0
    gc_ms: float = 0.0
    mean_run_ms: float = 0.0


class ServerStats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests_total = 0
        self.feedback_total = 0
        self.batches_total = 0
        self.batched_histories_total = 0
        self._requests: deque[tuple[float, float, bool]] = deque()  # (when, latency_s, ok)
        self._batches: deque[tuple[float, int]] = deque()
        self._feedback: deque[tuple[float, int]] = deque()
        self._buckets: deque[_Bucket] = deque()

    def _bucket(self) -> _Bucket:
        index = int(time.time()) // SERIES_STEP_S
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Bucket(index))
            while len(self._buckets) > SERIES_BUCKETS + 1:
                self._buckets.popleft()
        return self._buckets[-1]

    def record_request(self, latency_s: float, ok: bool) -> None:
        self.requests_total += 1
        self._requests.append((time.monotonic(), latency_s, ok))
        self._trim(self._requests)
        bucket = self._bucket()
        bucket.requests += 1
        bucket.errors += not ok
        bucket.latency_bins[bisect.bisect_left(_EDGES_MS, latency_s * 1000.0)] += 1

    def record_batch(self, size: int, seconds: float) -> None:
        """A model run of ``size`` histories that took ``seconds``."""
        metrics.BATCH_SIZE.observe(size)
        metrics.MODEL_RUN.observe(seconds)
        self.batches_total += 1
        self.batched_histories_total += size
        self._batches.append((time.monotonic(), size))
        self._trim(self._batches)
        bucket = self._bucket()
        bucket.batches += 1
        bucket.batched += size
        bucket.run_s += seconds

    def record_feedback(self, events: int, duplicates: int = 0) -> None:
        metrics.FEEDBACK_STORED.inc(events)
        metrics.FEEDBACK_DUPLICATE.inc(duplicates)
        self.feedback_total += events
        self._feedback.append((time.monotonic(), events))
        self._trim(self._feedback)
        self._bucket().feedback += events

    def record_loop(self, lag_s: float, gc_s: float) -> None:
        """The event loop's lag at one tick and the collection time since the last
        (server/loop_watch.py)."""
        bucket = self._bucket()
        bucket.loop_lag_max_s = max(bucket.loop_lag_max_s, lag_s)
        bucket.gc_s += gc_s

    def _trim(self, window: deque) -> None:  # type: ignore[type-arg]
        horizon = time.monotonic() - WINDOW_S
        while window and window[0][0] < horizon:
            window.popleft()

    def snapshot(self) -> dict[str, float]:
        for window in (self._requests, self._batches, self._feedback):
            self._trim(window)
        span = min(WINDOW_S, max(1e-3, time.monotonic() - self.started))
        latencies = np.array([lat for _, lat, _ in self._requests]) * 1000.0
        errors = sum(1 for _, _, ok in self._requests if not ok)
        sizes = [size for _, size in self._batches]
        return {
            "recommend_qps": len(self._requests) / span,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else 0.0,
            "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies.size else 0.0,
            "error_rate": errors / len(self._requests) if self._requests else 0.0,
            "mean_batch_size": float(np.mean(sizes)) if sizes else 0.0,
            "feedback_events_per_s": sum(n for _, n in self._feedback) / span,
            "uptime_s": time.monotonic() - self.started,
        }

    def series(self) -> list[Sample]:
        """The last SERIES_BUCKETS completed buckets, oldest first (empty ones as zeros)."""
        now = int(time.time()) // SERIES_STEP_S
        by_index = {b.index: b for b in self._buckets}
        samples = []
        for index in range(now - SERIES_BUCKETS, now):
            bucket = by_index.get(index) or _Bucket(index)
            samples.append(
                Sample(
                    at_ms=(index + 1) * SERIES_STEP_S * 1000,
                    recommend_qps=bucket.requests / SERIES_STEP_S,
                    latency_p50_ms=bucket.percentile_ms(0.50),
                    latency_p99_ms=bucket.percentile_ms(0.99),
                    error_rate=bucket.errors / bucket.requests if bucket.requests else 0.0,
                    feedback_events_per_s=bucket.feedback / SERIES_STEP_S,
                    mean_batch_size=bucket.batched / bucket.batches if bucket.batches else 0.0,
                    loop_lag_max_ms=bucket.loop_lag_max_s * 1000.0,
                    gc_ms=bucket.gc_s * 1000.0,
                    mean_run_ms=bucket.run_s * 1000.0 / bucket.batches if bucket.batches else 0.0,
                )
            )
        return samples
