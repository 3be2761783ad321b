"""The Celery application of the workers, built from Settings by the entry point.

Publishers (shared/training/jobs.py) send messages without Celery; the queue, exchange and
transport settings here match theirs, name for name.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from shared.config import Settings
from shared.training.jobs import (
    BUILD_ENGINE_TASK,
    ONLINE_METRICS_TASK,
    RETENTION_TASK,
    TRIGGERS_TASK,
    queue_arguments,
    transport_options,
)
from worker.tasks import register_tasks


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings of the workers and beat.

    A message is acknowledged when its job ends (``acks_late``); the broker's redelivery
    timeouts (shared.training.jobs.transport_options and queue_arguments) lie past the job time
    limit, and should a broker redeliver anyway, the claim in the database drops the copy.
    """
    limit = settings.worker.task_time_limit_s
    schedule: dict[str, Any] = {
        "recserve-triggers": {
            "task": TRIGGERS_TASK,
            "schedule": settings.worker.trigger_check_s,
            # A check that waited longer than its interval is stale: drop it.
            "options": {"expires": settings.worker.trigger_check_s},
        }
    }
    if settings.worker.online_metrics_every_s:
        schedule["recserve-online-metrics"] = {
            "task": ONLINE_METRICS_TASK,
            "schedule": settings.worker.online_metrics_every_s,
            "options": {"expires": settings.worker.online_metrics_every_s},
        }
    schedule["recserve-retention"] = {
        "task": RETENTION_TASK,
        "schedule": settings.worker.retention_every_s,
        "options": {"expires": settings.worker.retention_every_s},
    }
    arguments = queue_arguments(settings) or None
    queues = [
        Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)
        for name in dict.fromkeys((settings.worker.queue, settings.worker.gpu_queue))
    ]
    return {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(settings),
        "task_queues": queues,
        "task_default_queue": settings.worker.queue,
        "task_routes": {BUILD_ENGINE_TASK: {"queue": settings.worker.gpu_queue}},
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": limit,
        "task_soft_time_limit": max(1, limit - 30),
        "worker_hijack_root_logger": False,
        "beat_schedule": schedule,
    }


def create_app(settings: Settings) -> Celery:
    app = Celery("recserve")
    app.conf.update(celery_config(settings))
    register_tasks(app, settings)
    return app
