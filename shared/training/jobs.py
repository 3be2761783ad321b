"""Queueing jobs on the Celery workers, without Celery.

The server, the CLI and beat create a job row, then publish the task message with kombu
(Celery's own messaging library) in Celery's task message format (protocol 2): the
workers (worker/celery_app.py) consume it like any Celery task. So a server-only
install needs neither Celery nor the worker's dependencies.

Delivery is at-least-once (``acks_late``), so a worker may receive a job's message more
than once: after a broker redelivery, or a restart. The database decides: a worker runs
a job only after moving its row from queued to running in one UPDATE (job_store.claim_job),
so a second copy of the message finds it running (or finished) and is dropped.

Jobs are fenced. Each claim starts a new attempt whose number is the fencing token:
every later write of the attempt (heartbeat, progress, result, model version and its
activation) names it, and the database refuses it once another attempt is current. The
reaper (``reap_jobs``: every worker, beat and server run it) requeues a job whose
attempt sent no heartbeat for ``worker.job_lost_after_s`` as a new attempt, up to
``worker.max_attempts``, and fails a job left queued for ``worker.queue_timeout_s``.
Each attempt writes its own bundle folder, and the reaper deletes none: a lost attempt
may only be paused, and when it resumes it finds its writes refused, stops, and removes
its own folder.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.model.params import given_params
from shared.storage import job_store, model_store
from shared.storage.engine import session_scope
from shared.storage.tables import Job, JobCreate, JobKind, JobStatus, JobTrigger
from shared.wire.errors import Unavailable

log = logging.getLogger(__name__)

TRAIN_TASK = "recserve.train"
BUILD_ENGINE_TASK = "recserve.build_engine"
TRIGGERS_TASK = "recserve.check_triggers"
ONLINE_METRICS_TASK = "recserve.online_metrics"
RETENTION_TASK = "recserve.retention"
REDELIVERY_MARGIN_S = 3600
"""Broker redelivery timeouts exceed the job time limit by this much."""


def redelivery_s(settings: Settings) -> int:
    return settings.worker.task_time_limit_s + REDELIVERY_MARGIN_S


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options, the same for publishers and workers. A message is
    acknowledged when its job ends (``acks_late``), so Redis must not hand it to another
    worker while the job still runs: its visibility timeout is past the job time limit.
    kombu's SQLAlchemy transport hands every option to create_engine, so the embedded
    broker gets none."""
    if settings.embedded_broker:
        return {}
    return {"polling_interval": 0.5, "visibility_timeout": redelivery_s(settings)}


def queue_arguments(settings: Settings) -> dict[str, Any]:
    """RabbitMQ's consumer timeout past the job time limit (``x-consumer-timeout``,
    honoured by RabbitMQ 3.12 and newer; older ones ignore it, and the claim in the
    database drops a redelivered copy)."""
    if settings.broker.startswith(("amqp", "pyamqp")):
        return {"x-consumer-timeout": redelivery_s(settings) * 1000}
    return {}


def publish(settings: Settings, task: str, args: list[Any], *, queue: str) -> str:
    """Publishes one Celery task message (protocol 2) on ``queue``; returns its id.
    Raises whatever kombu raises when the broker cannot be reached (after retries)."""
    from kombu import Connection, Exchange, Queue

    task_id = str(uuid.uuid4())
    exchange = Exchange(queue, type="direct")
    declared = Queue(
        queue, exchange, routing_key=queue, queue_arguments=queue_arguments(settings) or None
    )
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": f"{os.getpid()}@{socket.gethostname()}",
        "ignore_result": True,
    }
    body: tuple[Any, ...] = (
        args,
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    retries = settings.worker.publish_retries
    with Connection(
        settings.broker, transport_options=transport_options(settings), connect_timeout=4
    ) as connection:
        producer = connection.Producer(serializer="json")
        producer.publish(
            body,
            exchange=exchange,
            routing_key=queue,
            declare=[declared],
            headers=headers,
            correlation_id=task_id,
            delivery_mode=2,
            retry=retries > 0,
            retry_policy={
                "max_retries": retries,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
        )
    return task_id


def submit_training(
    settings: Settings,
    engine: Engine,
    params: str | dict[str, Any] | None,
    *,
    trigger: JobTrigger = JobTrigger.MANUAL,
) -> Job:
    """The one door to training: every way to start it (CLI, StartTraining, the console,
    the schedule, the volume trigger, benchmarks, drills) comes through here. Validates
    the parameters, creates a train job row that stores only those given (taking the
    training lock) and queues it. Returns the job.

    Raises InvalidArgument for bad parameters, FailedPrecondition while another training
    job holds the lock, and Unavailable when the broker cannot be reached (the job row is
    then marked failed, so it never lingers as queued).
    """
    given = given_params(settings, params)  # only these: the recipe fills the rest
    with session_scope(engine) as session:
        job = job_store.create_job(
            session, job=JobCreate(kind=JobKind.TRAIN, params=given, trigger=trigger)
        )
        job_id = int(job.id or 0)
    return _publish_job(settings, engine, job_id, JobKind.TRAIN)


def _task_of(settings: Settings, kind: str) -> tuple[str, str]:
    """The Celery task and queue that run a job of ``kind``."""
    if kind == JobKind.BUILD_ENGINE:
        return BUILD_ENGINE_TASK, settings.worker.gpu_queue
    return TRAIN_TASK, settings.worker.queue


def _publish_job(settings: Settings, engine: Engine, job_id: int, kind: str) -> Job:
    """Publishes a created job's task and records its Celery id. Raises Unavailable
    when the broker cannot be reached (the job is then marked failed)."""
    task, queue = _task_of(settings, kind)
    what = "training" if kind == JobKind.TRAIN else kind
    try:
        task_id = publish(settings, task, [job_id], queue=queue)
    except Exception as exc:
        log.error("cannot queue %s job %s: %s", what, job_id, exc)
        with session_scope(engine) as session:
            job_store.finish_job(
                session,
                job_id=job_id,
                status=JobStatus.FAILED,
                error=f"the broker could not be reached to queue the job: {exc}",
            )
        raise Unavailable(
            f"the job broker is unreachable ({type(exc).__name__}: {exc}); {what} job "
            f"{job_id} was marked failed; retry when the broker is back"
        ) from exc
    with session_scope(engine) as session:
        job_store.set_job_celery_id(session, job_id=job_id, celery_id=task_id)
        return job_store.get_job(session, job_id=job_id)


def reap_jobs(settings: Settings, engine: Engine) -> tuple[list[int], list[int]]:
    """Requeues (and publishes again) the jobs whose attempt was lost, fails those with
    no attempts left and those queued past ``worker.queue_timeout_s``. Returns
    (requeued, failed) job ids."""
    worker = settings.worker
    with session_scope(engine) as session:
        requeued, ended = job_store.reap_lost_jobs(
            session, lost_after_s=worker.job_lost_after_s, max_attempts=worker.max_attempts
        )
        ended += job_store.expire_queued_jobs(session, queue_timeout_s=worker.queue_timeout_s)
    for job_id in ended:
        log.warning("job %s: failed (its worker was lost, or it was never taken)", job_id)
    for job_id in requeued:
        log.warning("job %s: its worker was lost; requeued as a new attempt", job_id)
        with session_scope(engine) as session:
            task, queue = _task_of(settings, job_store.get_job(session, job_id=job_id).kind)
        try:
            publish(settings, task, [job_id], queue=queue)
        except Exception as exc:  # it stays queued; the queue timeout fails it if need be
            log.error("job %s: requeued, but its message could not be published: %s", job_id, exc)
    return requeued, ended


def queue_engine_build(
    settings: Settings, engine: Engine, version: int, precision: str = "fp16"
) -> Job:
    """A build-engine job for model ``version``, queued on the GPU workers' queue
    (worker.gpu_queue). Raises Unavailable when the broker cannot be reached (the job is
    then marked failed)."""
    with session_scope(engine) as session:
        model_store.get_model_version(session, version=version)  # NotFound names it
        job = job_store.create_job(
            session,
            job=JobCreate(
                kind=JobKind.BUILD_ENGINE, params={"version": version, "precision": precision}
            ),
        )
        job_id = int(job.id or 0)
    return _publish_job(settings, engine, job_id, JobKind.BUILD_ENGINE)
