"""Engine builds as jobs: BuildEngine and worker.build_engines queue them on the GPU
queue; a worker without a GPU or `tensorrt` fails the job with the reason. (Building and
the parity check run where `tensorrt` and a CUDA device exist: tests/server/test_tensorrt.py.)"""

from __future__ import annotations

import grpc
import pytest

from shared.model.tensorrt_engine import tensorrt_available
from shared.proto.recserve.v1 import admin_pb2
from shared.storage import job_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import JobKind, JobStatus
from worker.engines import run_build_engine_job


async def test_build_engine_queues_a_job_a_cpu_worker_fails_with_the_reason(client, server) -> None:
    job = await client.admin.BuildEngine(admin_pb2.BuildEngineRequest(version=1))
    assert job.kind == "build-engine" and job.status == "queued"
    settings = server.parts.settings
    if tensorrt_available():
        pytest.skip("a GPU with tensorrt is present: the build would run for real")
    assert run_build_engine_job(settings, job.id) is None
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        done = job_store.get_job(session, job_id=job.id)
    engine.dispose()
    assert done.status == JobStatus.FAILED and "needs `tensorrt` and a CUDA device" in done.error
    assert done.params == {"version": 1, "precision": "fp16"}


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (admin_pb2.BuildEngineRequest(version=0), grpc.StatusCode.INVALID_ARGUMENT),
        (admin_pb2.BuildEngineRequest(version=99), grpc.StatusCode.NOT_FOUND),
        (
            admin_pb2.BuildEngineRequest(version=1, precision="int3"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_build_engine_refuses_bad_requests(client, request_, code) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.admin.BuildEngine(request_)
    assert err.value.code() == code


def test_training_queues_an_engine_build_when_asked(settings) -> None:
    from shared.training.jobs import submit_training
    from worker.pipeline import run_train_job

    building = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"build_engines": True})}
    )
    engine = make_engine(settings.db_url)
    job = submit_training(building, engine, {"epochs": 1})
    version = run_train_job(building, int(job.id or 0))
    with session_scope(engine) as session:
        jobs = job_store.list_jobs(session, limit=5)
    engine.dispose()
    (build,) = [j for j in jobs if j.kind == JobKind.BUILD_ENGINE]
    assert build.params == {"version": version, "precision": "fp16"}
    assert build.status == JobStatus.QUEUED
