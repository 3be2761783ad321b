"""The workers' Prometheus metrics (telemetry.metrics_port, /metrics).

    recserve_jobs_total{kind, outcome}         finished jobs: succeeded, failed, cancelled
    recserve_job_seconds{kind, outcome}        job duration histogram
    recserve_jobs{status}                      jobs queued and running now (the database)
    recserve_broker_queue_depth{queue}         messages waiting in the broker's queues

Celery's prefork pool runs jobs in child processes, so the job metrics use
prometheus_client's multiprocess mode: ``prepare_multiprocess()`` must run before
prometheus_client is first imported (the CLI does it first thing in `recserve worker`).
The endpoint aggregates every child's files; the queue figures are read at scrape time.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from shared.config import Settings

log = logging.getLogger(__name__)
_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess() -> str:
    """A fresh folder for this worker's metric files, named in the environment."""
    folder = tempfile.mkdtemp(prefix="recserve-worker-metrics-")
    os.environ[_ENV] = folder
    return folder


def cleanup_multiprocess(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@functools.cache
def _job_metrics() -> tuple[Any, Any]:
    """Created on first use, so that importing this module does not import
    prometheus_client before prepare_multiprocess() has run."""
    from prometheus_client import Counter, Histogram

    jobs = Counter("recserve_jobs", "Finished jobs by kind and outcome", ["kind", "outcome"])
    seconds = Histogram(
        "recserve_job_seconds",
        "Job duration by kind and outcome",
        ["kind", "outcome"],
        buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
    )
    return jobs, seconds


def job_finished(kind: str, outcome: str, seconds: float) -> None:
    jobs, durations = _job_metrics()
    jobs.labels(kind=kind, outcome=outcome).inc()
    durations.labels(kind=kind, outcome=outcome).observe(seconds)


class QueueCollector:
    """Queued and running jobs (the database) and broker queue lengths, per scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("recserve_jobs", "Jobs by status now", labels=["status"])
        for status, count in self._job_counts().items():
            jobs.add_metric([status], count)
        yield jobs
        depth = GaugeMetricFamily(
            "recserve_broker_queue_depth", "Messages waiting in a broker queue", labels=["queue"]
        )
        for queue, count in self._broker_depths().items():
            depth.add_metric([queue], count)
        yield depth

    def _job_counts(self) -> dict[str, int]:
        from shared.storage import job_store
        from shared.storage.engine import engine_for, session_scope

        engine = engine_for(self._settings)
        try:
            with session_scope(engine) as session:
                return job_store.count_jobs_by_status(session, statuses=("queued", "running"))
        except Exception:
            log.warning("job counts for /metrics unavailable", exc_info=True)
            return {}
        finally:
            engine.dispose()

    def _broker_depths(self) -> dict[str, int]:
        from kombu import Connection

        depths: dict[str, int] = {}
        worker = self._settings.worker
        try:
            with Connection(self._settings.broker, connect_timeout=2) as connection:
                channel = connection.default_channel
                for queue in (worker.queue, worker.gpu_queue):
                    try:
                        ok = channel.queue_declare(queue=queue, passive=True)
                        depths[queue] = int(ok.message_count)
                    except Exception:  # the queue does not exist (yet)
                        channel = connection.channel()
        except Exception:
            log.warning("broker queue depths for /metrics unavailable", exc_info=True)
        return depths


def serve_worker_metrics(settings: Settings) -> int | None:
    """The worker's /metrics: every pool process's job metrics and the queue figures."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from shared.telemetry import serve_metrics

    registry = CollectorRegistry()
    if os.environ.get(_ENV):
        MultiProcessCollector(registry)
    registry.register(QueueCollector(settings))  # type: ignore[arg-type]
    return serve_metrics(settings, registry)
