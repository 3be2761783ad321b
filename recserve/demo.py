"""`recserve demo` (the README's first command, `make run`).

1. Starts the gRPC server (embedded: SQLite under ./var/).
2. Sends the deterministic synthetic demo log (shared/synthetic.py) through the real
   Feedback path (FeedbackStream), unless the database already holds it.
3. Starts a Celery worker child process on the embedded broker and queues a training job
   through StartTraining, unless a model is already active (or --retrain).
4. Waits for the server to pick up the new model, prints its NDCG@10 beside popularity's,
   a real Recommend answer, and how to call the server from another terminal.
5. Serves until Ctrl-C (or exits with --exit).

The demo is the server's own client, and a client must not take its server down: each of
its calls is retried with backoff when it is refused or fails for a passing reason
(shared/client/retry.py), and says so; if a step still fails, the demo says why and the server
keeps serving (with --exit it stops, as asked).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc

from recserve.embedded import start_worker, worker_running
from server.app import RunningServer, start_server
from shared import synthetic
from shared.client import AsyncClient, client_token
from shared.client.retry import retrying
from shared.config import Settings
from shared.proto.recserve.v1 import admin_pb2, recommender_pb2
from shared.storage import event_store, item_store
from shared.storage.engine import session_scope
from shared.storage.tables import Item, JobStatus
from shared.telemetry import serve_metrics
from shared.training.joblog import unseen_lines
from shared.wire.errors import RecserveError

DEMO_PARAMS = {"epochs": 40, "learning_rate": 0.003, "patience": 3, "max_len": 50}
BATCH = 2000


def run_demo(
    settings: Settings, *, retrain: bool, exit_after: bool, epochs: int | None = None
) -> int:
    params: dict[str, object] = {**DEMO_PARAMS, **({"epochs": epochs} if epochs else {})}
    return asyncio.run(_demo(settings, params, retrain=retrain, exit_after=exit_after))


def requests_for(spec: synthetic.SyntheticSpec) -> Iterator[recommender_pb2.FeedbackRequest]:
    """The synthetic log as FeedbackStream requests of BATCH events."""
    batch: list[recommender_pb2.Event] = []
    for e in synthetic.events(spec):
        batch.append(
            recommender_pb2.Event(
                event_id=e.event_id,
                user_id=e.user_id,
                item_id=e.item_id,
                kind=e.kind,
                value=e.value,
                timestamp_ms=e.timestamp_ms,
            )
        )
        if len(batch) == BATCH:
            yield recommender_pb2.FeedbackRequest(events=batch)
            batch = []
    if batch:
        yield recommender_pb2.FeedbackRequest(events=batch)


async def _stream(spec: synthetic.SyntheticSpec) -> AsyncIterator[recommender_pb2.FeedbackRequest]:
    for request in requests_for(spec):
        yield request


async def _demo(
    settings: Settings, params: dict[str, object], *, retrain: bool, exit_after: bool
) -> int:
    metrics_port = serve_metrics(settings)
    running = await start_server(settings)
    client = AsyncClient(running.target, client_token(settings))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        print(f"recserve server listening on {settings.server.host}:{running.port}")
        if metrics_port:
            print(f"Prometheus metrics on http://127.0.0.1:{metrics_port}/metrics")
        try:
            finished = await _steps(settings, running, client, workers, params, retrain=retrain)
        except (grpc.RpcError, RecserveError) as exc:
            print(f"the demo could not finish: {_reason(exc)}", file=sys.stderr)
            finished = False
        if exit_after:
            return 0 if finished else 1
        print(
            "\nserving; press Ctrl-C to stop"
            if finished
            else f"\nthe server keeps serving on 127.0.0.1:{running.port}; press Ctrl-C to stop"
        )
        await asyncio.Event().wait()
        return 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    finally:
        await client.close()
        await running.stop(1.0)
        for worker in workers:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def _reason(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


async def _load_demo_data(running: RunningServer, client: AsyncClient) -> None:
    """The demo catalogue, and the synthetic log sent through FeedbackStream unless the
    database holds it already."""
    spec = synthetic.SyntheticSpec()
    with session_scope(running.engine) as session:
        have = event_store.count_events(session, id_prefix="demo-")
        catalogue = synthetic.catalogue(spec)
        items = [Item(item_id=i.item_id, title=i.title, labels=i.labels) for i in catalogue]
        item_store.upsert_items(session, items=items)
    if have >= sum(1 for _ in synthetic.events(spec)):
        print(f"the database already holds the {have:,} demo events; not re-sending them")
        return
    print("sending the synthetic demo log through FeedbackStream ...")
    started = datetime.now(UTC)
    # Event ids make a resent stream harmless: stored events count as duplicates.
    answer = await retrying(
        lambda: client.recommender.FeedbackStream(_stream(spec), metadata=client.metadata),
        what="FeedbackStream",
    )
    took = (datetime.now(UTC) - started).total_seconds()
    print(f"  stored {answer.stored:,} events, {answer.duplicates:,} duplicates in {took:.1f}s")


async def _steps(
    settings: Settings,
    running: RunningServer,
    client: AsyncClient,
    workers: list[subprocess.Popen[bytes]],
    params: dict[str, object],
    *,
    retrain: bool,
) -> bool:
    """Loads the demo data, trains if needed, shows a recommendation; False when the
    training did not succeed."""
    await _load_demo_data(running, client)
    models = await retrying(
        lambda: client.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=client.metadata),
        what="ListModels",
    )
    if retrain or not models.active_version:
        worker = None
        if not worker_running(settings):
            worker = start_worker(settings)
            workers.append(worker)
            print(f"started a Celery worker (pid {worker.pid}, log {settings.data_dir}/worker.log)")
        # Its own small parameters keep the quick start to a few minutes; a job started
        # with none lets the recipe choose from the data (`recserve train`).
        print(f"training with the demo's own small parameters {params}")
        job = await retrying(
            lambda: client.admin.StartTraining(
                admin_pb2.StartTrainingRequest(params_json=json.dumps(params)),
                metadata=client.metadata,
            ),
            what="StartTraining",
        )
        print(f"training job {job.id} queued; following it:")
        if not await _follow(client, job.id, worker):
            return False
    else:
        print(f"model version {models.active_version} is active; not retraining (--retrain to)")
    await _wait_for_model(running)
    await _show(running, client)
    return True


async def _follow(client: AsyncClient, job_id: int, worker: subprocess.Popen[bytes] | None) -> bool:
    last: str | None = None
    while True:
        job = await retrying(
            lambda: client.admin.GetJob(
                admin_pb2.GetJobRequest(id=job_id), metadata=client.metadata
            ),
            what="GetJob",
        )
        for line in unseen_lines(list(job.log), last):
            print(f"  [{job.progress * 100:5.1f}%] {line}", flush=True)
            last = line
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            if job.status != JobStatus.SUCCEEDED:
                print(f"job {job_id} {job.status}: {job.error}", file=sys.stderr)
                return False
            return True
        if worker is not None and worker.poll() is not None:
            print(
                f"the worker exited (code {worker.returncode}); see var/worker.log", file=sys.stderr
            )
            return False
        await asyncio.sleep(0.5)


async def _wait_for_model(running: RunningServer) -> None:
    for _ in range(600):
        await running.registry.refresh()
        if running.registry.current is not None:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not load the active model within 60 s")


async def _show(running: RunningServer, client: AsyncClient) -> None:
    model = running.registry.current
    assert model is not None
    metrics = model.bundle.metrics
    ndcg, pop = metrics.get("ndcg@10", 0.0), metrics.get("pop_ndcg@10", 0.0)
    print(f"\nmodel version {model.version} ({model.backend.name} on {model.backend.device})")
    print(
        f"  test NDCG@10 {ndcg:.4f}  HR@10 {metrics.get('hr@10', 0.0):.4f}   (full ranking, "
        "leave-one-out)"
    )
    print(f"  popularity NDCG@10 {pop:.4f}  HR@10 {metrics.get('pop_hr@10', 0.0):.4f}")
    print(f"  model / popularity NDCG@10 = {ndcg / pop if pop else float('inf'):.1f}x")
    user = "u00042"
    response = await retrying(
        lambda: client.recommender.Recommend(
            recommender_pb2.RecommendRequest(user_id=user, k=5),
            metadata=client.metadata,
            timeout=10,
        ),
        what="Recommend",
    )
    history = await running.history.get(user)
    with session_scope(running.engine) as session:
        titles = item_store.item_titles(
            session, item_ids=[*history[-3:], *[i.item_id for i in response.items]]
        )
    print(
        f"\nRecommend(user_id={user!r}, k=5) -> source "
        f"{recommender_pb2.Source.Name(response.source)}, model version {response.model_version}"
    )
    print("  recent history: " + ", ".join(f"{i} ({titles.get(i, '')})" for i in history[-3:]))
    for rank, item in enumerate(response.items, start=1):
        print(f"  {rank}. {item.item_id}  score {item.score:.3f}  {titles.get(item.item_id, '')}")
    port = running.port
    print(f"""
Call it from another terminal:
  .venv/bin/recserve recommend --target 127.0.0.1:{port} --user {user}
  grpcurl -plaintext -d '{{"user_id": "{user}", "k": 5}}' \\
      127.0.0.1:{port} recserve.v1.Recommender/Recommend
  .venv/bin/recserve tui --target 127.0.0.1:{port}""")
