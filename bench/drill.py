"""`recserve drill`: fault drills on real processes, each under live traffic.

Every drill starts real `recserve serve` (and worker) processes, runs writers (Feedback,
one new event per call, each acknowledged id remembered) and readers (Recommend for
users whose history the server has cached, and for users it has not), injects a fault,
and then reads the database: **acknowledged events lost** = acknowledged ids that are not
stored. A drill passes when nothing acknowledged was lost, no call ended INTERNAL or
UNKNOWN, and its own checks hold.

    database    PostgreSQL cut away for a while (a TCP proxy between server and it) and back
    broker      Redis cut away at StartTraining, and again while a job runs
    worker      the worker SIGKILLed mid-training: requeued, finished by another worker
    fencing     a worker SIGSTOPped past its lease, the job finished elsewhere, then SIGCONT:
                the stale attempt's writes refused, exactly one model activated
    bundle      a corrupt bundle activated
    sigterm     SIGTERM under load: NOT_SERVING first, calls served while draining, exit 0
    hot-swap    ten activations under load
    disk-full   SQLite on a small tmpfs that fills up, then grows

Prints a table and writes JSON (bench-results/drills.json).
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.engine import make_url

from bench.faults import SmallDisk, TcpProxy
from bench.ingest import cpu_model
from bench.processes import ServerProcess, WorkerProcess
from shared import synthetic
from shared.client import Client
from shared.config import Settings, TrainingSettings
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import (
    drop_databases,
    ensure_database,
    make_engine,
    migrate,
    session_scope,
)
from shared.storage.ingest import EventRow, EventStore
from shared.storage.tables import JobStatus, ModelStatus, ModelVersion

UNEXPECTED = {"INTERNAL", "UNKNOWN"}
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS = ("127.0.0.1", 6379)
SPEC = synthetic.SyntheticSpec(n_users=150, n_topics=4, items_per_topic=10, seed=3)
TRAINING = TrainingSettings(
    epochs=8, batch_size=32, learning_rate=0.01, warmup_steps=5, max_len=12, d_model=16,
    n_heads=2, n_blocks=1, dropout=0.1, patience=4,
)  # fmt: skip
SERVER_ENV = {
    "RECSERVE_SERVER__MODEL_POLL_S": "0.2",
    "RECSERVE_SERVER__INTRA_OP_THREADS": "1",
    "RECSERVE_SERVER__DRAIN_S": "0",
    "RECSERVE_DB_CONNECT_TIMEOUT_S": "1",
    "RECSERVE_DB_STATEMENT_TIMEOUT_S": "2",
    "RECSERVE_SERVER__REPLICA_REPORT_S": "0.5",
}
WORKER_ENV = {
    "RECSERVE_WORKER__HEARTBEAT_S": "0.5",
    "RECSERVE_WORKER__JOB_LOST_AFTER_S": "4",
    "RECSERVE_WORKER__REAP_EVERY_S": "1",
    **{
        f"RECSERVE_TRAINING__{k.upper()}": str(v)
        for k, v in TRAINING.model_dump().items()
        if v is not None
    },
}


@dataclass
class DrillResult:
    name: str
    acked: int = 0
    lost: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def unexpected(self) -> int:
        return sum(n for code, n in self.codes.items() if code in UNEXPECTED)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.unexpected == 0 and all(self.checks.values())


class Traffic:
    """Writers and readers against one server until stopped; every outcome is counted,
    with the time it happened."""

    def __init__(
        self, target: str, users: list[str], items: list[str], tag: str, *, writers: int = 2
    ) -> None:
        self.target = target
        self.users = users
        self.items = items
        self.tag = tag
        self.acked: set[str] = set()
        self.outcomes: list[tuple[float, str, str]] = []  # (when, kind, code)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        half = len(users) // 2
        self.warm, self.cold = users[:half], users[half:]
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(writers)
        ]
        self._threads.append(threading.Thread(target=self._read_warm, daemon=True))
        self._threads.append(threading.Thread(target=self._read_cold, daemon=True))

    def start(self) -> Traffic:
        client = Client(self.target)
        try:
            for user in self.warm:  # these histories are now cached by the server
                client.recommender.Recommend(pb.RecommendRequest(user_id=user), timeout=10)
        finally:
            client.close()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _record(self, kind: str, code: str) -> None:
        with self._lock:
            self.outcomes.append((time.monotonic(), kind, code))

    def _loop(self, kind: str, call: Callable[[Client, int], None]) -> None:
        client = Client(self.target)
        n = 0
        try:
            while not self._stop.is_set():
                try:
                    call(client, n)
                    self._record(kind, "OK")
                except grpc.RpcError as exc:
                    self._record(kind, exc.code().name)  # type: ignore[attr-defined]
                    time.sleep(0.02)
                n += 1
                time.sleep(0.005)
        finally:
            client.close()

    def _write(self, writer: int) -> None:
        rng = random.Random(writer)

        def call(client: Client, n: int) -> None:
            event_id = f"{self.tag}-{writer}-{n}"
            event = pb.Event(
                event_id=event_id, user_id=rng.choice(self.users), item_id=rng.choice(self.items)
            )
            answer = client.recommender.Feedback(pb.FeedbackRequest(events=[event]), timeout=5)
            if answer.stored + answer.duplicates == 1:
                with self._lock:
                    self.acked.add(event_id)

        self._loop("feedback", call)

    def _read_warm(self) -> None:
        rng = random.Random(7)
        self._loop(
            "recommend-cached",
            lambda c, _: c.recommender.Recommend(
                pb.RecommendRequest(user_id=rng.choice(self.warm)), timeout=5
            ),
        )

    def _read_cold(self) -> None:
        cold = iter(self.cold * 1000)  # each seen once before the first repeat
        self._loop(
            "recommend-uncached",
            lambda c, _: c.recommender.Recommend(
                pb.RecommendRequest(user_id=next(cold)), timeout=5
            ),
        )

    def codes(
        self, since: float = 0.0, until: float = float("inf"), kind: str = ""
    ) -> dict[str, int]:
        with self._lock:
            chosen = [
                code
                for when, k, code in self.outcomes
                if since <= when < until and (not kind or k == kind)
            ]
        return dict(collections.Counter(chosen))


def lost_events(database_url: str, acked: set[str]) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = event_store.stored_event_ids(conn, event_ids=sorted(acked))
        return len(acked - stored)
    finally:
        engine.dispose()


@dataclass
class Stage:
    """A database with the synthetic log and two servable versions (a trained model and
    a copy), a data folder, and what traffic needs."""

    settings: Settings
    users: list[str]
    items: list[str]
    drop: Callable[[], None]


@contextmanager
def stage(root: Path, *, postgres: bool, data_dir: Path | None = None) -> Iterator[Stage]:
    from shared.training.jobs import submit_training
    from worker.pipeline import run_train_job

    folder = data_dir or root / f"stage-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True, exist_ok=True)
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if postgres:
        name = f"recserve_drill_{uuid.uuid4().hex[:8]}"
        url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
        ensure_database(url)

        def drop() -> None:
            drop_databases(POSTGRES, [name])
    else:
        url = f"sqlite:///{folder / 'recserve.db'}"
    settings = Settings(data_dir=folder, database_url=url, training=TRAINING)
    try:
        migrate(url)
        engine = make_engine(url)
        events = list(synthetic.events(SPEC))
        store = EventStore(engine)
        store.store(
            [
                EventRow(
                    e.event_id, e.user_id, e.item_id, e.kind, e.value,
                    datetime.fromtimestamp(e.timestamp_ms / 1000, UTC),
                )
                for e in events
            ]
        )  # fmt: skip
        store.close()
        # Through the one door to training (its message waits on the embedded broker; the
        # job runs here, and a worker that gets the message later finds it done).
        job = submit_training(settings, engine, {"activate": "always"})
        run_train_job(settings, int(job.id or 0))
        with session_scope(engine) as session:
            v1 = model_store.get_model_version(session, version=1)
            shutil.copytree(settings.bundle_path(v1.artifact_path), settings.bundles_dir / "copy")
            model_store.create_model_version(
                session,
                model=ModelVersion(
                    status=ModelStatus.READY,
                    metrics=v1.metrics,
                    artifact_path="copy",
                    config=v1.config,
                    checksum=v1.checksum,
                ),
            )
        engine.dispose()
        users = sorted({e.user_id for e in events})
        items = sorted({e.item_id for e in events})
        yield Stage(settings, users, items, drop)
    finally:
        drop()


def run_traffic(stage_: Stage, target: str, tag: str) -> Traffic:
    return Traffic(target, stage_.users, stage_.items, tag).start()


def _finish(result: DrillResult, traffic: Traffic, database_url: str) -> DrillResult:
    traffic.stop()
    result.acked = len(traffic.acked)
    result.lost = lost_events(database_url, traffic.acked)
    result.codes = traffic.codes()
    return result


# --- the drills --------------------------------------------------------------------------


def drill_database(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("database")
    with stage(root, postgres=True) as s:
        parsed = make_url(s.settings.db_url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        server = ServerProcess(
            s.settings.model_copy(update={"database_url": proxied}), "database", env=SERVER_ENV
        )
        traffic = run_traffic(s, server.target, "db")
        try:
            time.sleep(seconds)
            cut_at = time.monotonic()
            proxy.cut()
            time.sleep(seconds * 2)
            back_at = time.monotonic()
            proxy.restore()
            time.sleep(seconds * 2)
            end = time.monotonic()
        finally:
            _finish(result, traffic, s.settings.db_url)
            server.stop()
            proxy.close()
        down = traffic.codes(cut_at + 0.5, back_at)
        cached_down = traffic.codes(cut_at + 0.5, back_at, "recommend-cached")
        feedback_down = traffic.codes(cut_at + 1.5, back_at, "feedback")
        feedback_back = traffic.codes(back_at + seconds, end, "feedback")
        result.checks = {
            "cached users answered while the database was down": cached_down.get("OK", 0) > 0,
            "Feedback UNAVAILABLE while down": feedback_down.get("UNAVAILABLE", 0) > 0
            and feedback_down.get("OK", 0) == 0,
            "recovered without a restart": feedback_back.get("OK", 0) > 0,
        }
        result.notes.append(f"while down: {down}")
    return result


def drill_broker(root: Path, seconds: float) -> DrillResult:
    from shared.training.jobs import submit_training

    result = DrillResult("broker")
    with stage(root, postgres=True) as s:
        proxy = TcpProxy(*REDIS)
        queue = f"recserve-drill-{uuid.uuid4().hex[:6]}"
        settings = s.settings.model_copy(
            update={"broker_url": f"redis://127.0.0.1:{proxy.port}/12"}
        )
        settings = settings.model_copy(
            update={
                "worker": settings.worker.model_copy(update={"queue": queue, "publish_retries": 1})
            }
        )
        server = ServerProcess(settings, "broker", env=SERVER_ENV)
        worker = WorkerProcess(settings, "broker", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "broker")
        client = Client(server.target)
        engine = make_engine(settings.db_url)
        try:
            proxy.cut()
            try:
                client.admin.StartTraining(admin_pb2.StartTrainingRequest(), timeout=30)
                refused = "OK"
            except grpc.RpcError as exc:
                refused = exc.code().name  # type: ignore[attr-defined]
            with session_scope(engine) as session:
                first = job_store.list_jobs(session, limit=1)[0]
            proxy.restore()
            time.sleep(1.0)
            job = submit_training(settings, engine, {"epochs": 40, "patience": 100})
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # mid-training: cut the broker again
                with session_scope(engine) as session:
                    if len(job_store.get_job(session, job_id=job_id).curve) >= 2:
                        break
                time.sleep(0.2)
            proxy.cut()
            time.sleep(seconds)
            proxy.restore()
            while time.monotonic() < deadline:
                with session_scope(engine) as session:
                    running = job_store.get_job(session, job_id=job_id)
                if running.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                    break
                time.sleep(0.3)
        finally:
            _finish(result, traffic, settings.db_url)
            client.close()
            worker.stop()
            server.stop()
            proxy.close()
            engine.dispose()
        result.checks = {
            "StartTraining with the broker down: UNAVAILABLE": refused == "UNAVAILABLE",
            "that job row marked failed, not left queued": first.status == JobStatus.FAILED,
            "the job that ran through the outage succeeded once": running.status
            == JobStatus.SUCCEEDED
            and running.attempts == 1,
        }
    return result


def _wait_job(engine: Any, job_id: int, done: Callable[[Any], bool], deadline: float) -> Any:
    """The job once ``done(job)`` holds, or as it is at ``deadline``."""
    while True:
        with session_scope(engine) as session:
            job = job_store.get_job(session, job_id=job_id)
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def _versions_of(engine: Any, job_id: int) -> tuple[list[int], list[int]]:
    """The versions the job registered, and those activated by it."""
    with session_scope(engine) as session:
        versions = [
            int(m.version or 0)
            for m in model_store.list_model_versions(session, limit=1000)
            if m.job_id == job_id
        ]
        activations = [
            a.version
            for a in model_store.list_activations(session, limit=1000)
            if a.reason == f"promoted by job {job_id}"
        ]
    return versions, activations


FINITE_JOB = {"epochs": 30, "patience": 30, "activate": "always"}
"""Caught mid-training, and ends a few seconds later when run again."""


def drill_worker(root: Path, seconds: float) -> DrillResult:
    from shared.training.jobs import submit_training

    result = DrillResult("worker")
    with stage(root, postgres=False) as s:
        server = ServerProcess(s.settings, "worker", env=SERVER_ENV)
        worker = WorkerProcess(s.settings, "first", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "worker")
        engine = make_engine(s.settings.db_url)
        second: WorkerProcess | None = None
        try:
            job = submit_training(s.settings, engine, FINITE_JOB)
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 180
            _wait_job(engine, job_id, lambda j: len(j.curve) >= 2, deadline)
            worker.kill()
            second = WorkerProcess(s.settings, "second", env=WORKER_ENV)
            done = _wait_job(
                engine, job_id, lambda j: j.status not in ("queued", "running"), deadline
            )
            time.sleep(seconds)
            versions, activated = _versions_of(engine, job_id)
        finally:
            _finish(result, traffic, s.settings.db_url)
            worker.stop()
            if second is not None:
                second.stop()
            server.stop()
            engine.dispose()
        result.checks = {
            "requeued as attempt 2, which succeeded": done.status == JobStatus.SUCCEEDED
            and done.attempts == 2,
            "the lost attempt logged": any("attempt 1 lost" in line for line in done.log),
            "exactly one version registered and activated": len(versions) == 1
            and activated == versions,
        }
    return result


def drill_fencing(root: Path, seconds: float) -> DrillResult:
    """A worker SIGSTOPped mid-training past its lease: the reaper requeues the job, a
    second worker finishes it as attempt 2 and activates its model; then SIGCONT. The
    stale attempt's next write is refused: it stops, removes its own folder, and neither
    its result nor a model of its own is recorded. PostgreSQL and Redis, so that the
    stopped process holds no lock on a shared database file."""
    from shared.training.jobs import submit_training

    result = DrillResult("fencing")
    with stage(root, postgres=True) as s:
        queue = f"recserve-drill-{uuid.uuid4().hex[:6]}"
        settings = s.settings.model_copy(update={"broker_url": "redis://127.0.0.1:6379/11"})
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"queue": queue})}
        )
        server = ServerProcess(settings, "fencing", env=SERVER_ENV)
        first = WorkerProcess(settings, "stopped", env=WORKER_ENV)
        traffic = run_traffic(s, server.target, "fencing")
        engine = make_engine(settings.db_url)
        second: WorkerProcess | None = None
        try:
            job = submit_training(settings, engine, FINITE_JOB)
            job_id = int(job.id or 0)
            deadline = time.monotonic() + 180
            _wait_job(engine, job_id, lambda j: len(j.curve) >= 2, deadline)
            os.killpg(first.proc.pid, signal.SIGSTOP)
            second = WorkerProcess(settings, "second", env=WORKER_ENV)
            done = _wait_job(
                engine, job_id, lambda j: j.status not in ("queued", "running"), deadline
            )
            os.killpg(first.proc.pid, signal.SIGCONT)
            stale_log = settings.data_dir / "worker-stopped.log"
            refused = False
            while time.monotonic() < deadline and not refused:
                refused = "is no longer current" in stale_log.read_text(errors="replace")
                time.sleep(0.2)
            time.sleep(seconds)
            after = _wait_job(engine, job_id, lambda j: True, deadline)
            versions, activated = _versions_of(engine, job_id)
        finally:
            _finish(result, traffic, settings.db_url)
            os.killpg(first.proc.pid, signal.SIGCONT)
            first.stop()
            if second is not None:
                second.stop()
            server.stop()
            engine.dispose()
        result.checks = {
            "attempt 2 finished the job": done.status == JobStatus.SUCCEEDED and done.attempts == 2,
            "the resumed attempt's writes refused": refused,
            "the job's result unchanged by it": after.status == JobStatus.SUCCEEDED
            and after.model_version == done.model_version
            and after.finished_at == done.finished_at,
            "exactly one version registered and activated": len(versions) == 1
            and activated == versions,
            "the stale attempt's folder removed": not (
                settings.bundles_dir / f"job-{job_id}-1"
            ).exists(),
        }
        result.notes.append(f"job {job_id}: {after.log[-3:]}")
    return result


def drill_bundle(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("bundle")
    with stage(root, postgres=False) as s:
        with (s.settings.bundles_dir / "copy" / "model.onnx").open("r+b") as handle:
            handle.seek(100)
            handle.write(b"corrupted")
        server = ServerProcess(s.settings, "bundle", env=SERVER_ENV)
        traffic = run_traffic(s, server.target, "bundle")
        client = Client(server.target)
        try:
            time.sleep(seconds)
            try:
                client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=2), timeout=30)
                answer = "OK"
            except grpc.RpcError as exc:
                answer = exc.code().name  # type: ignore[attr-defined]
                detail = exc.details()  # type: ignore[attr-defined]
            time.sleep(seconds)
            stats = client.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=10)
            listing = client.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=10)
        finally:
            _finish(result, traffic, s.settings.db_url)
            client.close()
            server.stop()
        result.checks = {
            "ActivateModel answered FAILED_PRECONDITION": answer == "FAILED_PRECONDITION"
            and "model.onnx" in detail,
            "the previous model keeps serving": stats.active_version == 1,
            "and stays active in the database": listing.active_version == 1,
        }
    return result


def drill_sigterm(root: Path, seconds: float) -> DrillResult:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    result = DrillResult("sigterm")
    with stage(root, postgres=False) as s:
        drain_s = max(1.0, seconds)
        env = {
            **SERVER_ENV,
            "RECSERVE_SERVER__DRAIN_S": str(drain_s),
            "RECSERVE_SERVER__GRACE_S": "5",
        }
        server = ServerProcess(s.settings, "sigterm", env=env)
        traffic = run_traffic(s, server.target, "sigterm")
        health_seen: list[tuple[float, str]] = []

        def watch() -> None:
            with grpc.insecure_channel(server.target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while server.proc.poll() is None:
                    try:
                        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        health_seen.append(
                            (
                                time.monotonic(),
                                health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
                            )
                        )
                    except grpc.RpcError:
                        health_seen.append((time.monotonic(), "GONE"))
                    time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            time.sleep(seconds)
            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            code = server.proc.wait(timeout=drain_s + 30)
            exited = time.monotonic()
        finally:
            _finish(result, traffic, s.settings.db_url)
            watcher.join(5)
            server.stop()
        not_serving = [t for t, status in health_seen if status == "NOT_SERVING" and t >= sent]
        served_while_draining = traffic.codes(
            not_serving[0] if not_serving else exited, exited
        ).get("OK", 0)
        result.checks = {
            "health NOT_SERVING first": bool(not_serving),
            "calls still served while draining": served_while_draining > 0,
            "exit status 0": code == 0,
        }
        result.notes.append(f"exited {exited - sent:.1f}s after SIGTERM (drain {drain_s:.0f}s)")
    return result


def drill_hot_swap(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("hot-swap")
    with stage(root, postgres=False) as s:
        server = ServerProcess(s.settings, "hot-swap", env=SERVER_ENV)
        traffic = run_traffic(s, server.target, "swap")
        client = Client(server.target)
        swaps = 0
        try:
            for n in range(10):
                client.admin.ActivateModel(
                    admin_pb2.ActivateModelRequest(version=2 if n % 2 == 0 else 1), timeout=30
                )
                swaps += 1
                time.sleep(seconds / 5)
        finally:
            _finish(result, traffic, s.settings.db_url)
            client.close()
            server.stop()
        errors = {code: n for code, n in result.codes.items() if code != "OK"}
        result.checks = {"ten swaps, no failed call": swaps == 10 and not errors}
    return result


def drill_disk_full(root: Path, seconds: float) -> DrillResult:
    result = DrillResult("disk-full")
    disk = SmallDisk(root / f"small-disk-{uuid.uuid4().hex[:6]}", 24)
    if not disk.available:
        result.notes.append("skipped: mounting a tmpfs needs root on this machine")
        result.checks = {"a small file system could be mounted": False}
        return result
    try:
        with stage(root, postgres=False, data_dir=disk.path) as s:
            # Fill what is left of the 24 MB with ballast, leaving ~1.5 MB for feedback.
            free = shutil.disk_usage(disk.path).free
            (disk.path / "ballast").write_bytes(b"\0" * max(0, free - 1_500_000))
            server = ServerProcess(s.settings, "disk-full", env=SERVER_ENV)
            traffic = Traffic(server.target, s.users, s.items, "disk", writers=4).start()
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not traffic.codes(kind="feedback").get(
                    "UNAVAILABLE"
                ):
                    time.sleep(0.2)
                full_at = time.monotonic()
                time.sleep(seconds)
                disk.grow(256)
                grown_at = time.monotonic()
                time.sleep(seconds * 2)
            finally:
                _finish(result, traffic, s.settings.db_url)
                server.stop()
            result.checks = {
                "Feedback UNAVAILABLE when the disk is full": traffic.codes(
                    full_at - 5, grown_at, "feedback"
                ).get("UNAVAILABLE", 0)
                > 0,
                "recovered when space came back": traffic.codes(
                    grown_at + seconds, float("inf"), "feedback"
                ).get("OK", 0)
                > 0,
            }
    finally:
        disk.close()
    return result


DRILLS: dict[str, Callable[[Path, float], DrillResult]] = {
    "database": drill_database,
    "broker": drill_broker,
    "worker": drill_worker,
    "fencing": drill_fencing,
    "bundle": drill_bundle,
    "sigterm": drill_sigterm,
    "hot-swap": drill_hot_swap,
    "disk-full": drill_disk_full,
}


def run_drills(
    root: Path, names: list[str], *, seconds: float = 2.0, output: Path | None = None
) -> list[DrillResult]:
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        started = time.perf_counter()
        result = DRILLS[name](root, seconds)
        result.notes.append(f"{time.perf_counter() - started:.0f}s")
        results.append(result)
        print_row(result, header=len(results) == 1)
    report = {
        "passed": all(r.passed for r in results),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "drills": [
            {
                "name": r.name,
                "passed": r.passed,
                "acknowledged": r.acked,
                "acknowledged_lost": r.lost,
                "internal_or_unknown": r.unexpected,
                "codes": r.codes,
                "checks": r.checks,
                "notes": r.notes,
            }
            for r in results
        ],
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
        print(f"wrote {output}")
    return results


def print_row(result: DrillResult, *, header: bool) -> None:
    if header:
        print(f"{'drill':10} {'result':6} {'acked':>7} {'lost':>5} {'INTERNAL':>8}  codes / checks")
    codes = ", ".join(f"{c} {n}" for c, n in sorted(result.codes.items()))
    print(
        f"{result.name:10} {'pass' if result.passed else 'FAIL':6} {result.acked:>7} "
        f"{result.lost:>5} {result.unexpected:>8}  {codes}"
    )
    for check, ok in result.checks.items():
        print(f"{'':42}{'ok  ' if ok else 'NO  '}{check}")
    for note in result.notes:
        print(f"{'':42}{note}")


def main_args(args: Any) -> int:
    names = args.drills.split(",") if args.drills else list(DRILLS)
    unknown = [n for n in names if n not in DRILLS]
    if unknown:
        raise SystemExit(f"unknown drill(s) {unknown}; accepted: {', '.join(DRILLS)}")
    results = run_drills(
        Path(args.data_dir or "var/drills"),
        names,
        seconds=args.seconds,
        output=Path(args.output or "bench-results/drills.json"),
    )
    return 0 if all(r.passed for r in results) else 1
