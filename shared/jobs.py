"""Queueing jobs on the Celery workers without importing worker code.

The server, the CLI and the TUI (through the server) create a job row, then send the
task by name. Workers (worker/celery_app.py) register tasks with these names.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy.engine import Engine

from shared import crud
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, JobCreate, JobKind
from shared.params import parse_training_params

TRAIN_TASK = "recserve.train"
BUILD_ENGINE_TASK = "recserve.build_engine"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the producer side and the workers."""
    # kombu's SQLAlchemy transport hands every transport option to create_engine, so the
    # embedded broker keeps kombu's default 1 s polling interval.
    transport = {} if settings.embedded_broker else {"polling_interval": 0.5}
    return {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "task_default_queue": settings.worker.queue,
        "task_routes": {BUILD_ENGINE_TASK: {"queue": settings.worker.gpu_queue}},
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.worker.task_time_limit_s,
        "task_soft_time_limit": max(1, settings.worker.task_time_limit_s - 30),
        "worker_hijack_root_logger": False,
    }


def producer(settings: Settings) -> Celery:
    app = Celery("recserve-producer")
    app.conf.update(celery_config(settings))
    return app


def submit_training(
    settings: Settings,
    engine: Engine,
    params: str | dict[str, Any] | None,
    app: Celery | None = None,
) -> Job:
    """Validates parameters, creates a train job row and queues it. Returns the job."""
    validated = parse_training_params(settings, params)
    overrides = validated.model_dump(exclude_defaults=False)
    with session_scope(engine) as session:
        job = crud.create_job(session, job=JobCreate(kind=JobKind.TRAIN, params=overrides))
        job_id = int(job.id or 0)
    client = app or producer(settings)
    result = client.send_task(TRAIN_TASK, args=[job_id], queue=settings.worker.queue)
    with session_scope(engine) as session:
        crud.set_job_celery_id(session, job_id=job_id, celery_id=str(result.id))
        return crud.get_job(session, job_id=job_id)
