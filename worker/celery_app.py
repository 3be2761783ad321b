"""The Celery application of the workers, built from Settings by the entry point."""

from __future__ import annotations

from celery import Celery

from shared.config import Settings
from shared.jobs import celery_config
from worker.tasks import register_tasks


def create_app(settings: Settings) -> Celery:
    app = Celery("recserve")
    app.conf.update(celery_config(settings))
    register_tasks(app, settings)
    return app
