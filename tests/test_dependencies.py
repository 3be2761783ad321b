"""Each role runs on its own extra: a serving replica imports neither Celery, torch, ONNX
export nor the console, and still queues training jobs that a worker runs; a command whose
extra is missing names the extra to install."""

from __future__ import annotations

import json
import subprocess
import sys

from shared.client import Client, wait_serving
from shared.config import Settings
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import job_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import JobStatus
from tests.support.processes import WorkerProcess, free_port, process_env
from tests.support.waits import wait_until

NOT_IN_SERVER = ("celery", "billiard", "torch", "onnx", "onnxscript", "textual", "honcho")

# Runs `recserve ARGS` with the named top-level packages made unimportable, as on a machine
# where they are not installed.
WITHOUT = """
import runpy, sys
blocked = set(sys.argv[1].split(","))
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
sys.argv = ["recserve", *sys.argv[2:]]
runpy.run_module("recserve", run_name="__main__")
"""


def _without(blocked: tuple[str, ...], *args: str) -> list[str]:
    return [sys.executable, "-c", WITHOUT, ",".join(blocked), *args]


def test_a_server_without_worker_or_console_packages_serves_and_queues_training(
    settings: Settings,
) -> None:
    port = free_port()
    log_path = settings.data_dir / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            _without(NOT_IN_SERVER, "serve"),
            env=process_env(settings, SERVER__PORT=str(port)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = None
    try:
        target = f"127.0.0.1:{port}"
        up = wait_serving(target, timeout=60, alive=lambda: server.poll() is None)
        assert up, log_path.read_text()[-3000:]
        client = Client(target)
        try:
            reply = client.recommender.Recommend(pb.RecommendRequest(user_id="u00001", k=5))
            assert len(reply.items) == 5
            started = client.admin.StartTraining(
                admin_pb2.StartTrainingRequest(params_json=json.dumps({"epochs": 2}))
            )
        finally:
            client.close()
        engine = make_engine(settings.db_url)
        with session_scope(engine) as session:
            queued = job_store.get_job(session, job_id=started.id)
        assert queued.status == JobStatus.QUEUED and queued.celery_id
        # The message the Celery-less server published is a task the worker runs.
        worker = WorkerProcess(settings)

        def finished() -> object:
            assert worker.alive(), worker.tail()
            with session_scope(engine) as session:
                job = job_store.get_job(session, job_id=started.id)
            return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None

        job = wait_until(finished, "the job finished", timeout=180, every=0.5)
        assert job.status == JobStatus.SUCCEEDED, job.error or worker.tail()
    finally:
        if worker is not None:
            worker.discard()
        server.terminate()
        server.wait(timeout=30)


def test_a_command_whose_extra_is_missing_names_it(settings: Settings) -> None:
    result = subprocess.run(
        _without(("celery",), "worker"),
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'recserve[worker]'" in result.stderr
    assert "Traceback" not in result.stderr
