"""Thin Celery tasks: ids in, retries and time limits, then plain functions.

CUDA is only initialised inside the task (torch is imported there), never in the
prefork parent.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from shared.config import Settings
from shared.training.jobs import (
    BUILD_ENGINE_TASK,
    ONLINE_METRICS_TASK,
    RETENTION_TASK,
    TRAIN_TASK,
    TRIGGERS_TASK,
)

log = logging.getLogger(__name__)


def register_tasks(app: Celery, settings: Settings) -> None:
    @app.task(  # type: ignore[untyped-decorator]
        name=TRAIN_TASK,
        acks_late=True,
        autoretry_for=(OperationalError,),
        retry_backoff=True,
        max_retries=3,
    )
    def train(job_id: int) -> int | None:
        from worker.pipeline import run_train_job

        return run_train_job(settings, int(job_id))

    @app.task(  # type: ignore[untyped-decorator]
        name=BUILD_ENGINE_TASK, acks_late=True, max_retries=1
    )
    def build_engine(job_id: int) -> dict[str, Any] | None:
        from worker.engines import run_build_engine_job

        return run_build_engine_job(settings, int(job_id))

    @app.task(name=TRIGGERS_TASK, acks_late=False)  # type: ignore[untyped-decorator]
    def check_triggers() -> int | None:
        from worker.lifecycle import check_triggers

        return check_triggers(settings)

    @app.task(name=ONLINE_METRICS_TASK, acks_late=False)  # type: ignore[untyped-decorator]
    def online_metrics() -> int:
        from worker.online import compute_online_metrics

        window = settings.worker.online_metrics_window_h
        return len(compute_online_metrics(settings, window_hours=window))

    @app.task(name=RETENTION_TASK, acks_late=False)  # type: ignore[untyped-decorator]
    def retention() -> dict[str, int]:
        from shared.storage.engine import engine_for
        from shared.storage.retention import apply_data_retention

        engine = engine_for(settings)
        try:
            done = apply_data_retention(settings, engine)
        finally:
            engine.dispose()
        return {"events": done.events, "impressions": done.impressions}

    reaper: dict[str, Any] = {}

    @worker_ready.connect(weak=False)
    def start_reaper(**_: Any) -> None:
        from worker.lifecycle import JobReaper

        reaper["thread"] = JobReaper(settings)
        reaper["thread"].start()

    @worker_shutdown.connect(weak=False)
    def stop_reaper(**_: Any) -> None:
        thread = reaper.pop("thread", None)
        if thread is not None:
            thread.stop()
