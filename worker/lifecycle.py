"""Jobs that run themselves: the retraining triggers and the reaper of lost jobs.

- **Schedule** (``worker.retrain_every_s``): when the newest training job is older than
  the interval (or there is none), a training job starts. The schedule lives in the job
  history, not in beat's own state file, so restarting beat neither skips nor repeats a
  run.
- **Volume** (``worker.retrain_after_events``): once that many events have arrived
  since the newer of the active model's watermark and the newest training job's
  watermark, a training job starts. Counting from the newest job too keeps a model that
  was not promoted from being retrained on every check.
- **One at a time**: both go through the training lock in the database
  (job_store.create_job); while a training job is queued or running, a trigger does nothing.
- **Reaper** (shared.training.jobs.reap_jobs): a running job whose attempt sent no heartbeat for
  ``job_lost_after_s`` is requeued as a new attempt (fenced: the lost attempt's writes
  are refused from then on), or failed after ``max_attempts``, which releases the lock;
  a job queued past ``queue_timeout_s`` fails too. Every worker runs it in a thread,
  beat runs it with the triggers, and every server runs it in its poll loop.

Celery beat is the clock: it sends ``recserve.check_triggers`` every
``worker.trigger_check_s`` (``recserve beat`` or ``recserve worker --beat``).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from shared.config import Settings
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import JobTrigger, as_utc, utcnow
from shared.training.jobs import reap_jobs, submit_training
from shared.wire.errors import FailedPrecondition

log = logging.getLogger(__name__)


def due_trigger(settings: Settings) -> JobTrigger | None:
    """Which trigger (if any) wants a training job now."""
    worker = settings.worker
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            if job_store.training_lock_holder(session) is not None:
                return None
            if worker.retrain_every_s:
                latest = job_store.latest_training_job(session)
                horizon = utcnow() - timedelta(seconds=worker.retrain_every_s)
                if latest is None or as_utc(latest.created_at) <= horizon:
                    return JobTrigger.SCHEDULE
            if worker.retrain_after_events:
                active = model_store.get_active_model(session)
                base = max(
                    active.data_watermark if active else 0, job_store.newest_job_watermark(session)
                )
                if (
                    event_store.count_events_after(session, watermark=base)
                    >= worker.retrain_after_events
                ):
                    return JobTrigger.VOLUME
        return None
    finally:
        engine.dispose()


def check_triggers(settings: Settings) -> int | None:
    """Reaps lost jobs, then starts a training job if a trigger is due; returns its id."""
    reap(settings)
    trigger = due_trigger(settings)
    if trigger is None:
        return None
    engine = engine_for(settings)
    try:
        job = submit_training(settings, engine, None, trigger=trigger)
    except FailedPrecondition as exc:  # another job took the lock meanwhile
        log.info("retraining trigger %s skipped: %s", trigger, exc)
        return None
    finally:
        engine.dispose()
    log.info("retraining trigger %s started training job %s", trigger, job.id)
    return int(job.id or 0)


def reap(settings: Settings) -> tuple[list[int], list[int]]:
    """Requeues the jobs whose worker was lost, fails those out of attempts or left
    queued; returns (requeued, failed) job ids."""
    engine = engine_for(settings)
    try:
        return reap_jobs(settings, engine)
    finally:
        engine.dispose()


class JobReaper(threading.Thread):
    """Runs reap() every ``worker.reap_every_s`` until stopped (in every worker)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="job-reaper", daemon=True)
        self._settings = settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reap(self._settings)
            except Exception:
                log.warning("job reaper: database unreachable", exc_info=True)
            if self._stop_event.wait(self._settings.worker.reap_every_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
