"""Queueing jobs on the Celery workers without importing worker code.

The server, the CLI and beat create a job row, then send the task by name. Workers
(worker/celery_app.py) register tasks with these names.

Delivery is at-least-once (``acks_late``), so a worker may receive a job's message more
than once: after a broker redelivery, or a restart. The database decides: a worker runs
a job only after moving its row from queued to running in one UPDATE (crud.claim_job),
so a second copy of the message finds it running (or finished) and is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue
from sqlalchemy.engine import Engine

from shared import crud
from shared.config import Settings
from shared.db import session_scope
from shared.errors import Unavailable
from shared.models import Job, JobCreate, JobKind, JobStatus, JobTrigger
from shared.params import parse_training_params

log = logging.getLogger(__name__)

TRAIN_TASK = "recserve.train"
BUILD_ENGINE_TASK = "recserve.build_engine"
TRIGGERS_TASK = "recserve.check_triggers"
REDELIVERY_MARGIN_S = 3600
"""Broker redelivery timeouts exceed the job time limit by this much."""


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the producer side, the workers and beat.

    A message is acknowledged when its job ends (``acks_late``), so the broker must not
    hand it to another worker while the job still runs: Redis's visibility timeout and
    RabbitMQ's consumer timeout (the ``x-consumer-timeout`` queue argument, honoured by
    RabbitMQ 3.12 and newer) are set past the job time limit. Should a broker redeliver
    anyway, the claim in the database drops the copy.
    """
    limit = settings.worker.task_time_limit_s
    redelivery_s = limit + REDELIVERY_MARGIN_S
    # kombu's SQLAlchemy transport hands every transport option to create_engine, so the
    # embedded broker keeps kombu's default 1 s polling interval and gets no options.
    transport = (
        {}
        if settings.embedded_broker
        else {"polling_interval": 0.5, "visibility_timeout": redelivery_s}
    )
    config: dict[str, Any] = {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "task_default_queue": settings.worker.queue,
        "task_routes": {BUILD_ENGINE_TASK: {"queue": settings.worker.gpu_queue}},
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "task_soft_time_limit": max(1, limit - 30),
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "recserve-triggers": {
                "task": TRIGGERS_TASK,
                "schedule": settings.worker.trigger_check_s,
                # A check that waited longer than its interval is stale: drop it.
                "options": {"expires": settings.worker.trigger_check_s},
            }
        },
    }
    if settings.broker.startswith(("amqp", "pyamqp")):
        arguments = {"x-consumer-timeout": redelivery_s * 1000}
        config["task_queues"] = [
            Queue(name, routing_key=name, queue_arguments=arguments)
            for name in (settings.worker.queue, settings.worker.gpu_queue)
        ]
    return config


def producer(settings: Settings) -> Celery:
    app = Celery("recserve-producer")
    app.conf.update(celery_config(settings))
    return app


def submit_training(
    settings: Settings,
    engine: Engine,
    params: str | dict[str, Any] | None,
    app: Celery | None = None,
    *,
    trigger: JobTrigger = JobTrigger.MANUAL,
) -> Job:
    """Validates parameters, creates a train job row (taking the training lock) and
    queues it. Returns the job.

    Raises InvalidArgument for bad parameters, FailedPrecondition while another training
    job holds the lock, and Unavailable when the broker cannot be reached (the job row is
    then marked failed, so it never lingers as queued).
    """
    validated = parse_training_params(settings, params)
    overrides = validated.model_dump(exclude_defaults=False)
    with session_scope(engine) as session:
        job = crud.create_job(
            session, job=JobCreate(kind=JobKind.TRAIN, params=overrides, trigger=trigger)
        )
        job_id = int(job.id or 0)
    client = app or producer(settings)
    retries = settings.worker.publish_retries
    try:
        result = client.send_task(
            TRAIN_TASK,
            args=[job_id],
            queue=settings.worker.queue,
            retry=retries > 0,
            retry_policy={
                "max_retries": retries,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
        )
    except Exception as exc:
        log.error("cannot queue training job %s: %s", job_id, exc)
        with session_scope(engine) as session:
            crud.finish_job(
                session,
                job_id=job_id,
                status=JobStatus.FAILED,
                error=f"the broker could not be reached to queue the job: {exc}",
            )
        raise Unavailable(
            f"the job broker is unreachable ({type(exc).__name__}: {exc}); training job "
            f"{job_id} was marked failed; retry when the broker is back"
        ) from exc
    with session_scope(engine) as session:
        crud.set_job_celery_id(session, job_id=job_id, celery_id=str(result.id))
        return crud.get_job(session, job_id=job_id)
