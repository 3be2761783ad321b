"""Every door to training stores only what it was given, and the recipe fills the rest.

Each door starts a job on a small sparse synthetic log (a few events per user) and on a
dense one, with settings that set no training parameter (so none pre-empts the recipe),
giving only an epoch bound. The job then stores just that bound, and the recipe's
choices show in the job's resolved table and the model version's: the keys that differ
between the two logs and from the fixed defaults (max_len, n_heads, lr_schedule, and the
sparse log's dropout), each marked as the recipe's with its reason.

Doors: the CLI (`recserve train --wait`, its own process), StartTraining, the console's
training form, the schedule, the volume trigger, the quality benchmark and the drills'
staging. The schedule and volume trigger give no parameters at all, so their epoch bound
comes from the settings (and is marked so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import synthetic
from shared.config import ServerSettings, Settings, TrainingSettings, WorkerSettings
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import Job, JobStatus, ModelVersion
from tests.conftest import event_rows

pytestmark = pytest.mark.timeout(300)
SPARSE = synthetic.SyntheticSpec(
    n_users=200, n_topics=6, items_per_topic=10, seed=11, min_length=3, extra_length=3,
    max_length=12,
)  # fmt: skip
DENSE = synthetic.SyntheticSpec(
    n_users=60, n_topics=6, items_per_topic=10, seed=12, min_length=60, extra_length=40,
    max_length=200,
)  # fmt: skip
BOUND = {"epochs": 1}
ROOT = Path(__file__).resolve().parents[2]


def untouched_settings(data_dir: Path, **worker: Any) -> Settings:
    """Settings that set no training parameter (only the worker's threads and triggers)."""
    return Settings(
        data_dir=data_dir,
        server=ServerSettings(port=0, model_poll_s=0.2, intra_op_threads=1, drain_s=0),
        worker=WorkerSettings(torch_threads=1, **worker),
        training=TrainingSettings(),
    )


@pytest.fixture(params=["sparse", "dense"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Settings]:
    spec = SPARSE if request.param == "sparse" else DENSE
    settings = untouched_settings(tmp_path / "var")
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        event_store.insert_events(session, events=event_rows(spec))
    engine.dispose()
    return request.param, settings


def finished(settings: Settings, job_id: int) -> tuple[Job, ModelVersion]:
    engine = make_engine(settings.db_url)
    try:
        with session_scope(engine) as session:
            job = job_store.get_job(session, job_id=job_id)
            assert job.status == JobStatus.SUCCEEDED, job.error or job.log[-5:]
            model = model_store.get_model_version(session, version=int(job.model_version or 0))
            return job, model
    finally:
        engine.dispose()


def run_in_process(settings: Settings, job_id: int) -> tuple[Job, ModelVersion]:
    from worker.pipeline import run_train_job

    run_train_job(settings, job_id)
    return finished(settings, job_id)


def assert_recipe(kind: str, job: Job, model: ModelVersion, *, bound: str = "given") -> None:
    """The job stored only its bound; the recipe chose the rest from this log's shape."""
    for table in (job.resolved, model.config["sources"]):
        by_name = {row["name"]: row for row in table}
        assert by_name["epochs"]["source"] == bound
        for name in ("max_len", "n_heads", "lr_schedule", "dropout"):
            assert by_name[name]["source"] == "recipe", (name, by_name[name])
            assert by_name[name]["reason"], name
        assert by_name["n_heads"]["value"] == 1 != TrainingSettings().n_heads
        assert by_name["lr_schedule"]["value"] == "cosine" != TrainingSettings().lr_schedule
        if kind == "sparse":
            assert by_name["max_len"]["value"] == 20
            assert by_name["dropout"]["value"] == 0.5 != TrainingSettings().dropout
            assert "sparse data" in by_name["dropout"]["reason"]
        else:
            assert by_name["max_len"]["value"] >= 100
            assert by_name["dropout"]["value"] == 0.2
            assert "dense data" in by_name["dropout"]["reason"]
    trained = model.config["training"]
    assert trained["n_heads"] == 1 and trained["lr_schedule"] == "cosine"


def test_the_cli(log: tuple[str, Settings]) -> None:
    kind, settings = log
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_")}
    env.update(
        {
            "RECSERVE_DATA_DIR": str(settings.data_dir),
            "RECSERVE_WORKER__TORCH_THREADS": "1",
            "RECSERVE_TELEMETRY__METRICS_PORT": "0",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "recserve", "train", "--wait", "--param", "epochs=1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job_id = int(done.stdout.split("queued train job ")[1].split()[0])
    job, model = finished(settings, job_id)
    assert job.params == BOUND, "only what was given"
    assert "recipe: max_len=" in done.stdout
    assert_recipe(kind, job, model)


async def test_start_training(log: tuple[str, Settings]) -> None:
    from server.app import start_server
    from shared.client import AsyncClient
    from shared.proto.recserve.v1 import admin_pb2

    kind, settings = log
    running = await start_server(settings)
    client = AsyncClient(running.target)
    try:
        job = await client.admin.StartTraining(
            admin_pb2.StartTrainingRequest(params_json=json.dumps(BOUND))
        )
        assert json.loads(job.params_json) == BOUND
    finally:
        await client.close()
        await running.stop(0)
    stored, model = run_in_process(settings, job.id)
    assert stored.params == BOUND
    assert_recipe(kind, stored, model)


async def test_the_console_form(log: tuple[str, Settings]) -> None:
    from textual.widgets import Input

    from server.app import start_server
    from tests.tui.test_console import SIZE, until
    from tui.app import RecserveConsole

    kind, settings = log
    running = await start_server(settings)
    try:
        app = RecserveConsole(running.target, refresh_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "n")
            await until(pilot, lambda: app.screen.query("#opt-epochs"))
            form = app.screen
            assert form.query_one("#opt-max_len", Input).placeholder == "auto (recipe)"
            assert form.query_one("#opt-batch_size", Input).placeholder == "default 128"
            form.query_one("#opt-epochs", Input).value = "1"
            await pilot.press("ctrl+t")
            await until(pilot, lambda: not app.screen.query("#opt-epochs"))
        engine = make_engine(settings.db_url)
        with session_scope(engine) as session:
            (job,) = job_store.list_jobs(session, limit=5)
        engine.dispose()
    finally:
        await running.stop(0)
    assert job.params == BOUND, "only the filled field"
    stored, model = run_in_process(settings, int(job.id or 0))
    assert_recipe(kind, stored, model)


@pytest.mark.parametrize("trigger", ["schedule", "volume"])
def test_the_triggers(log: tuple[str, Settings], trigger: str) -> None:
    from worker.lifecycle import check_triggers

    kind, settings = log
    worker = {"retrain_every_s": 3600} if trigger == "schedule" else {"retrain_after_events": 10}
    triggered = untouched_settings(settings.data_dir, **worker).model_copy(
        update={"training": TrainingSettings(epochs=1)}
    )
    job_id = check_triggers(triggered)
    assert job_id is not None
    job, model = run_in_process(triggered, job_id)
    assert job.params == {} and job.trigger == trigger
    assert_recipe(kind, job, model, bound="settings")


def test_the_drills_staging(tmp_path: Path) -> None:
    from bench.drill_stage import stage

    with stage(tmp_path, postgres=False) as staged:
        engine = make_engine(staged.settings.db_url)
        with session_scope(engine) as session:
            job = job_store.get_job(session, job_id=1)
        engine.dispose()
    assert job.params == {"activate": "always"}, "the drills give only what they need"
    by_name = {row["name"]: row for row in job.resolved}
    assert by_name["activate"]["source"] == "given"
    assert by_name["lr_schedule"]["source"] in ("recipe", "settings")
