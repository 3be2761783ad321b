"""Live counters for GetServerStats: a sliding window over the last minute."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

WINDOW_S = 60.0


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

    def record_request(self, latency_s: float, ok: bool) -> None:
        self.requests_total += 1
        self._requests.append((time.monotonic(), latency_s, ok))
        self._trim(self._requests)

    def record_batch(self, size: int) -> None:
        self.batches_total += 1
        self.batched_histories_total += size
        self._batches.append((time.monotonic(), size))
        self._trim(self._batches)

    def record_feedback(self, events: int) -> None:
        self.feedback_total += events
        self._feedback.append((time.monotonic(), events))
        self._trim(self._feedback)

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
