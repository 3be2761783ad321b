"""The server's Prometheus metrics (exported on telemetry.metrics_port, /metrics).

recserve_requests_total{method, code}          RPCs by method and status code
recserve_request_seconds{method}               RPC latency histogram
recserve_batch_size                            histories per model run
recserve_cache_lookups_total{cache, result}    history / state cache hits and misses
recserve_model_info{version, backend, device}  the served model (value 1)
recserve_model_version                         the served version (0: none)
recserve_feedback_events_total{result}         stored / duplicate events
recserve_queue_depth{queue}                    batcher and feedback-writer queues
recserve_invalidations_total                   other replicas' notifications applied
recserve_impressions_dropped_total             impressions not logged (queue full, db error)
recserve_event_loop_lag_seconds                how late the event loop ran a 10 ms timer
recserve_gc_pause_seconds{generation}          garbage collections and their duration
recserve_refused_total{reason}                 calls the guard refused (server/guard.py)
recserve_stage_seconds{stage}                  each request pipeline stage's time
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

REQUESTS = Counter("recserve_requests", "RPCs by method and status code", ["method", "code"])
LATENCY = Histogram("recserve_request_seconds", "RPC latency", ["method"], buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram(
    "recserve_batch_size",
    "Histories per model run of the dynamic batcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CACHE = Counter(
    "recserve_cache_lookups", "Per-user cache lookups by cache and result", ["cache", "result"]
)
HISTORY_HIT = CACHE.labels(cache="history", result="hit")
HISTORY_MISS = CACHE.labels(cache="history", result="miss")
STATE_HIT = CACHE.labels(cache="state", result="hit")
STATE_MISS = CACHE.labels(cache="state", result="miss")
MODEL = Info("recserve_model", "The model this server serves")
MODEL_VERSION = Gauge("recserve_model_version", "The model version this server serves (0: none)")
FEEDBACK = Counter("recserve_feedback_events", "Feedback events by result", ["result"])
FEEDBACK_STORED = FEEDBACK.labels(result="stored")
FEEDBACK_DUPLICATE = FEEDBACK.labels(result="duplicate")
QUEUE_DEPTH = Gauge("recserve_queue_depth", "Work waiting in a queue", ["queue"])
INVALIDATIONS = Counter(
    "recserve_invalidations", "Cache invalidations received from other replicas"
)

IMPRESSIONS_DROPPED = Counter(
    "recserve_impressions_dropped", "Impressions not logged: queue full or database error"
)
LOOP_LAG = Histogram(
    "recserve_event_loop_lag_seconds",
    "How late the event loop ran a timer: time every call waits before its handler",
    buckets=LATENCY_BUCKETS,
)
MODEL_RUN = Histogram(
    "recserve_model_run_seconds",
    "Model runs (a batch, or a lone request) by duration, without the wait for a thread",
    buckets=LATENCY_BUCKETS,
)
GC_PAUSE = Histogram(
    "recserve_gc_pause_seconds",
    "Garbage collections by generation and how long each stopped the interpreter",
    ["generation"],
    buckets=LATENCY_BUCKETS,
)
STAGE_NAMES = ("validate", "resolve", "history", "score", "rank", "explain", "respond")
STAGE = Histogram(
    "recserve_stage_seconds",
    "Time in each stage of the request pipeline (server/pipeline)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
REFUSED = Counter(
    "recserve_refused",
    "Calls refused before their servicer: unauthenticated, permission_denied, unary_slots, "
    "streams_per_caller, stream_idle",
    ["reason"],
)


def watch_queue(name: str, depth: Callable[[], float]) -> None:
    """Reports ``depth()`` as recserve_queue_depth{queue=name} at every scrape."""
    QUEUE_DEPTH.labels(queue=name).set_function(depth)


def served(version: int, backend: str, device: str) -> None:
    MODEL.info({"version": str(version), "backend": backend, "device": device})
    MODEL_VERSION.set(version)
