"""The distributed configuration on real services: two server replicas and two Celery
workers on PostgreSQL and Redis. A training job queued through replica A is trained by a
worker and served by both replicas; a Feedback accepted by A is seen by the very next
Recommend on B."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest

from shared.client import Client
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store
from shared.storage.engine import make_engine, migrate, session_scope
from tests.conftest import TINY_SPEC, event_rows, make_settings, require_service
from tests.support.processes import ServerProcess, WorkerProcess
from tests.support.waits import wait_until

pytestmark = pytest.mark.timeout(300)


def wait(condition, what: str, timeout: float = 120.0, *processes) -> None:
    wait_until(
        condition, what, timeout=timeout, every=0.2,
        explain=lambda: "\n".join(p.tail() for p in processes),
    )  # fmt: skip


def serving_version(client: Client) -> int:
    try:
        stats = client.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=5)
    except grpc.RpcError:
        return -1
    return int(stats.active_version)


@pytest.fixture
def deployment(tmp_path: Path, postgres_url: str):
    """PostgreSQL + Redis, the tiny synthetic log, two workers and two replicas."""
    require_service("Redis", "127.0.0.1", 6379)
    queue = f"recserve-dist-{os.getpid()}-{time.monotonic_ns()}"
    settings = make_settings(tmp_path / "shared-storage").model_copy(
        update={"database_url": postgres_url, "broker_url": "redis://127.0.0.1:6379/14"}
    )
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"queue": queue})}
    )
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    engine.dispose()
    workers = [WorkerProcess(settings, f"worker-{n}") for n in (1, 2)]
    replicas = [ServerProcess(settings, name, wait=False) for name in ("replica-a", "replica-b")]
    clients = [Client(r.target) for r in replicas]
    try:
        yield settings, replicas, clients, workers
    finally:
        for c in clients:
            c.close()
        for r in replicas:
            r.stop()
        for w in workers:
            w.discard()


def test_two_replicas_two_workers_train_serve_and_agree(deployment) -> None:
    settings, replicas, (a, b), workers = deployment
    wait(lambda: serving_version(a) == 0 and serving_version(b) == 0, "replicas up", 60, *replicas)

    # Queued through replica A, trained by one of the workers, served by both replicas.
    job = a.admin.StartTraining(admin_pb2.StartTrainingRequest(params_json="{}"), timeout=30)
    wait(
        lambda: serving_version(a) == 1 and serving_version(b) == 1,
        "both replicas serve the trained model",
        180,
        *replicas,
        *workers,
    )
    done = b.admin.GetJob(admin_pb2.GetJobRequest(id=job.id), timeout=5)
    assert done.status == "succeeded" and done.model_version == 1
    assert done.worker, "claimed by a worker"

    def replicas_agree() -> bool:  # the deployment-wide view, as seen from A
        stats = a.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=5)
        seen = [(r.serving_version, r.health) for r in stats.replicas if r.alive]
        return seen == [(1, "SERVING")] * 2

    wait(replicas_agree, "A's stats show both replicas serving version 1", 15)
    for c in (a, b):
        answer = c.recommender.Recommend(pb.RecommendRequest(user_id="u00001", k=5), timeout=10)
        assert answer.model_version == 1 and answer.source == pb.SOURCE_MODEL

    # Feedback on A, then at once a Recommend on B: B must reflect it.
    lag_ms = []
    for n in range(20):
        user = f"new-user-{n}"
        start = [
            pb.Event(event_id=f"start-{n}-{i}", user_id=user, item_id=f"i00{n % 4}-00{i}")
            for i in range(2)
        ]
        a.recommender.Feedback(pb.FeedbackRequest(events=start), timeout=10)
        before = b.recommender.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        assert before.history_used == 2, "B has read and cached the two events"
        item = before.items[0].item_id  # B's top pick, not in the user's history
        event = pb.Event(event_id=f"cross-{n}", user_id=user, item_id=item, kind="click")
        a.recommender.Feedback(pb.FeedbackRequest(events=[event]), timeout=10)
        acked = time.perf_counter()
        after = b.recommender.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        lag_ms.append((time.perf_counter() - acked) * 1000)
        assert after.history_used == 3, (n, before, after)
        assert item not in [i.item_id for i in after.items], "the new event counts as seen"
    assert max(lag_ms) < 100, lag_ms
    print(json.dumps({"cross_replica_recommend_ms": sorted(lag_ms)}))


def test_recserve_up_starts_the_stack_and_ctrl_c_stops_it(
    tmp_path: Path, postgres_url: str
) -> None:
    """`recserve up`: replicas, a worker and beat under honcho on PostgreSQL and Redis;
    every endpoint printed; SIGINT (Ctrl-C) stops every process."""
    import signal
    import subprocess
    import sys

    from shared.client import wait_serving
    from tests.support.processes import free_port

    require_service("Redis", "127.0.0.1", 6379)
    port, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "RECSERVE_DATA_DIR": str(tmp_path / "stack"),
        "RECSERVE_WORKER__QUEUE": f"recserve-up-{os.getpid()}-{time.monotonic_ns()}",
        "RECSERVE_WORKER__TORCH_THREADS": "1",
    }
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recserve",
            "up",
            "--replicas",
            "2",
            "--workers",
            "1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics),
            "--database-url",
            postgres_url,
            "--broker",
            "redis://127.0.0.1:6379/13",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for replica in (port, port + 1):
            assert wait_serving(f"127.0.0.1:{replica}", timeout=90, require_model=False)
        log.seek(0)
        printed = log.read()
        for line in (
            "server.1  grpc",
            f":{port + 1}   metrics http://127.0.0.1:{metrics + 1}/metrics",
            f"worker.1  metrics http://127.0.0.1:{metrics + 100}/metrics",
            "beat      ",
            f"console   recserve tui --target 127.0.0.1:{port}",
        ):
            assert line in printed, printed
        wait(lambda: "beat started" in (tmp_path / "up.log").read_text(), "beat up", 30)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        children = subprocess.run(
            ["pgrep", "-f", f"--port {port}"], capture_output=True, text=True
        ).stdout.split()
        assert children == [], "every process of the stack stopped"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
