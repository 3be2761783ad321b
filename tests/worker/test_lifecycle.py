"""The model lifecycle on real worker processes: a worker SIGKILLed mid-training (on the
embedded broker, Redis and RabbitMQ), cancelling queued and running jobs, a retraining
schedule run by beat, the volume trigger, and a broker that is down."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.config import Settings
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import Job, JobStatus, JobTrigger, ModelStatus
from shared.training.jobs import submit_training
from shared.wire.errors import Unavailable
from tests.conftest import TINY_SPEC, event_rows, make_settings, require_service
from tests.support.processes import WorkerProcess
from tests.support.waits import holds_for, wait_until

pytestmark = pytest.mark.timeout(240)

# Long enough to be caught mid-training: early stopping never ends it.
SLOW = {"epochs": 2000, "patience": 2000, "d_model": 8, "n_heads": 1, "max_len": 8}
# Caught mid-training too, but it ends (a few seconds of epochs) when run again.
FINITE = {"epochs": 8, "patience": 8, "d_model": 8, "n_heads": 1, "max_len": 8}
FAST_LIFECYCLE = {
    "WORKER__HEARTBEAT_S": "0.5",
    "WORKER__JOB_LOST_AFTER_S": "4",
    "WORKER__REAP_EVERY_S": "1",
}


def _with_data(settings: Settings) -> None:
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    engine.dispose()


def _job(settings: Settings, job_id: int) -> Job:
    engine = make_engine(settings.db_url)
    try:
        with session_scope(engine) as s:
            return job_store.get_job(s, job_id=job_id)
    finally:
        engine.dispose()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 90, logs: tuple = ()) -> None:
    wait_until(
        condition, what, timeout=timeout, every=0.2,
        explain=lambda: "\n".join(w.tail() for w in logs),
    )  # fmt: skip


def _queue_settings(settings: Settings, **update: object) -> Settings:
    queue = f"recserve-test-{os.getpid()}-{time.monotonic_ns()}"
    settings = settings.model_copy(update=update)
    return settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"queue": queue})}
    )


def _sigkill_mid_training(settings: Settings) -> None:
    _with_data(settings)
    engine = make_engine(settings.db_url)
    first = WorkerProcess(settings, "worker-1", **FAST_LIFECYCLE)
    second: WorkerProcess | None = None
    try:
        job = submit_training(settings, engine, FINITE)
        job_id = int(job.id or 0)
        _wait(
            lambda: len(_job(settings, job_id).curve) >= 2,
            "job running with epochs reported",
            logs=(first,),
        )
        running = _job(settings, job_id)
        assert running.status == JobStatus.RUNNING and running.attempts == 1
        first.kill()  # the machine dies mid-training
        # A second worker comes up; the reaper requeues the job as attempt 2, and it runs
        # there to the end (a broker that redelivers the first message hands over a copy
        # that the database refuses to run twice).
        second = WorkerProcess(settings, "worker-2", **FAST_LIFECYCLE)
        _wait(
            lambda: _job(settings, job_id).status == JobStatus.SUCCEEDED,
            "the requeued attempt succeeds",
            logs=(second,),
        )
        done = _job(settings, job_id)
        assert done.attempts == 2, "one requeue, claimed once each"
        assert any("attempt 1 lost" in line for line in done.log), done.log
        with session_scope(engine) as s:
            (model,) = model_store.list_model_versions(s, limit=10)
        assert model.artifact_path == f"job-{job_id}-2" and done.lock_key is None
        # The surviving worker process trained it to the end: registered, promoted
        # (nothing was active), exported.
        assert model.status == ModelStatus.ACTIVE and model.job_id == job_id
        assert settings.bundle_path(model.artifact_path).joinpath("model.onnx").exists()
        assert not (settings.bundles_dir / f"job-{job_id}-1").exists()
    finally:
        first.discard()
        if second is not None:
            second.discard()
        engine.dispose()


def test_sigkill_mid_training_on_the_embedded_broker(tmp_path: Path) -> None:
    _sigkill_mid_training(make_settings(tmp_path / "var"))


def test_sigkill_mid_training_on_redis(tmp_path: Path, postgres_url: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    settings = _queue_settings(
        make_settings(tmp_path / "var"),
        database_url=postgres_url,
        broker_url="redis://127.0.0.1:6379/15",
    )
    _sigkill_mid_training(settings)


def test_sigkill_mid_training_on_rabbitmq(tmp_path: Path) -> None:
    """RabbitMQ redelivers an unacknowledged message as soon as the dead worker's
    connection drops: the second worker gets it and must refuse to run it."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    settings = _queue_settings(
        make_settings(tmp_path / "var"), broker_url="amqp://guest:guest@127.0.0.1:5672//"
    )
    _sigkill_mid_training(settings)
    log = (settings.data_dir / "worker-2.log").read_text()
    assert "is running, not queued: not running it again" in log or (
        "is failed, not queued: not running it again" in log
    ), log[-3000:]


def test_cancel_running_and_queued_jobs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    _with_data(settings)
    engine = make_engine(settings.db_url)
    worker = WorkerProcess(settings, "worker", **FAST_LIFECYCLE)
    try:
        job = submit_training(settings, engine, SLOW)
        job_id = int(job.id or 0)
        _wait(lambda: len(_job(settings, job_id).curve) >= 1, "running", logs=(worker,))
        with session_scope(engine) as s:
            job_store.cancel_job(s, job_id=job_id)
        _wait(
            lambda: _job(settings, job_id).status == JobStatus.CANCELLED,
            "stops at its next progress report",
            timeout=30,
            logs=(worker,),
        )
        cancelled = _job(settings, job_id)
        assert "cancelled by an operator" in cancelled.error and cancelled.lock_key is None
        assert not list(settings.bundles_dir.glob(f"job-{job_id}*")), "no bundle, no tmp"
        with session_scope(engine) as s:
            assert model_store.list_model_versions(s, limit=10) == []
        # A queued job that is cancelled never starts, even when its message arrives.
        worker.stop()
        queued = submit_training(settings, engine, {"epochs": 2, "d_model": 8})
        with session_scope(engine) as s:
            job_store.cancel_job(s, job_id=int(queued.id or 0))
        worker = WorkerProcess(settings, "worker-again", **FAST_LIFECYCLE)
        _wait(
            lambda: "is cancelled, not queued: not running it again" in worker.tail(),
            "the worker drops the cancelled job's message",
            logs=(worker,),
        )
        assert _job(settings, int(queued.id or 0)).attempts == 0
    finally:
        worker.discard()
        engine.dispose()


def test_beat_schedule_trains_and_promotes_with_nobody_acting(tmp_path: Path) -> None:
    """A schedule of one run every 2 minutes: beat (inside the worker) starts the first
    run at once (no training job yet), the worker trains, the model is promoted."""
    settings = make_settings(tmp_path / "var")
    _with_data(settings)
    worker = WorkerProcess(
        settings,
        "worker-beat",
        "--beat",
        WORKER__RETRAIN_EVERY_S="120",
        WORKER__TRIGGER_CHECK_S="0.5",
    )
    engine = make_engine(settings.db_url)
    try:

        def promoted() -> bool:
            with session_scope(engine) as s:
                active = model_store.get_active_model(s)
            return active is not None

        _wait(promoted, "a scheduled job trains and its model is promoted", logs=(worker,))
        with session_scope(engine) as s:
            (job,) = job_store.list_jobs(s, limit=10)
            active = model_store.get_active_model(s)
        assert job.trigger == JobTrigger.SCHEDULE and job.status == JobStatus.SUCCEEDED
        assert active is not None and active.job_id == job.id
        assert active.status == ModelStatus.ACTIVE

        def one_job() -> bool:
            with session_scope(engine) as s:
                return len(job_store.list_jobs(s, limit=10)) == 1

        holds_for(one_job, "no second job: the next run is 2 minutes away", seconds=1.5)
    finally:
        worker.discard()
        engine.dispose()


def test_volume_trigger_and_the_single_training_rule(tmp_path: Path) -> None:
    from worker.lifecycle import check_triggers, due_trigger

    settings = make_settings(tmp_path / "var")
    _with_data(settings)
    volume = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"retrain_after_events": 1000})}
    )
    assert due_trigger(settings) is None, "no trigger configured"
    assert due_trigger(volume) == JobTrigger.VOLUME, f"{len(event_rows(TINY_SPEC))} new events"
    job_id = check_triggers(volume)
    assert job_id is not None and _job(volume, job_id).trigger == JobTrigger.VOLUME
    assert check_triggers(volume) is None, "one training job at a time"
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        attempt = job_store.claim_job(s, job_id=job_id, worker="test")
        assert attempt == 1
        job_store.set_job_watermark(
            s, job_id=job_id, attempt=attempt, watermark=event_store.max_event_row(s)
        )
        job_store.finish_job(
            s, job_id=job_id, attempt=attempt, status=JobStatus.FAILED, error="test"
        )
    engine.dispose()
    assert due_trigger(volume) is None, "counted from the newest job's watermark"


def test_broker_down_at_start_training_marks_the_job_failed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var").model_copy(
        update={"broker_url": "redis://127.0.0.1:1/0"}  # nothing listens there
    )
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"publish_retries": 1})}
    )
    _with_data(settings)
    engine = make_engine(settings.db_url)
    try:
        with pytest.raises(Unavailable, match="broker is unreachable"):
            submit_training(settings, engine, {"epochs": 2})
        with session_scope(engine) as s:
            (job,) = job_store.list_jobs(s, limit=10)
        assert job.status == JobStatus.FAILED and job.lock_key is None
        assert "broker could not be reached" in job.error
    finally:
        engine.dispose()
