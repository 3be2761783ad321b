"""A real Celery worker process runs a training job: embedded broker (SQLite) and the
distributed configuration (PostgreSQL + Redis, PostgreSQL + RabbitMQ)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.config import Settings
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import JobStatus, ModelStatus
from shared.training.jobs import submit_training
from tests.conftest import TINY_SPEC, event_rows, make_settings, require_service
from tests.support.waits import wait_until

FAST = {"epochs": 3, "d_model": 8, "n_heads": 1, "max_len": 8, "activate": "always"}


def _run_job_on_worker(settings: Settings, tmp_path: Path) -> None:
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    env = dict(os.environ)
    env.update(
        {
            "RECSERVE_DATA_DIR": str(settings.data_dir),
            "RECSERVE_DATABASE_URL": settings.database_url,
            "RECSERVE_BROKER_URL": settings.broker_url,
            "RECSERVE_WORKER__TORCH_THREADS": "1",
            "RECSERVE_WORKER__QUEUE": settings.worker.queue,
        }
    )
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "recserve", "worker", "--pool", "solo"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        job = submit_training(settings, engine, FAST)
        assert job.celery_id

        def finished() -> object:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            with session_scope(engine) as s:
                current = job_store.get_job(s, job_id=job.id)
            return current if current.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None

        current = wait_until(finished, "the job finished", timeout=180, every=0.5)
        assert current.status == JobStatus.SUCCEEDED, (
            current.error or (tmp_path / "worker.log").read_text()[-3000:]
        )
        with session_scope(engine) as s:
            model = model_store.get_model_version(s, version=current.model_version)
            assert model.status == ModelStatus.ACTIVE
            assert model.job_id == job.id
        assert settings.bundle_path(model.artifact_path).joinpath("model.onnx").exists()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        engine.dispose()


def test_worker_process_trains_on_embedded_broker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    assert settings.embedded_broker
    _run_job_on_worker(settings, tmp_path)


def test_worker_process_trains_with_postgres_and_redis(tmp_path: Path, postgres_url: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    queue = f"recserve-test-{os.getpid()}-{time.monotonic_ns()}"
    settings = make_settings(tmp_path / "var").model_copy(
        update={
            "database_url": postgres_url,
            "broker_url": "redis://127.0.0.1:6379/15",
        }
    )
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"queue": queue})}
    )
    _run_job_on_worker(settings, tmp_path)


def test_worker_process_trains_with_rabbitmq(tmp_path: Path) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    queue = f"recserve-test-{os.getpid()}-{time.monotonic_ns()}"
    settings = make_settings(tmp_path / "var").model_copy(
        update={
            "broker_url": "amqp://guest:guest@127.0.0.1:5672//",
        }
    )
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"queue": queue})}
    )
    _run_job_on_worker(settings, tmp_path)


@pytest.mark.timeout(240)
def test_train_wait_starts_an_embedded_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    engine.dispose()
    env = dict(
        os.environ, RECSERVE_DATA_DIR=str(settings.data_dir), RECSERVE_WORKER__TORCH_THREADS="1"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recserve",
            "train",
            "--wait",
            "--param",
            "epochs=2",
            "--param",
            "d_model=8",
            "--param",
            "max_len=8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started an embedded worker" in result.stdout
    assert "epoch 2/2" in result.stdout
    assert "succeeded: model version 1" in result.stdout
