"""The stage of the fault drills (bench/drill.py): a database with a trained model, the
processes' settings, the traffic that counts acknowledged and lost events, and the helpers
the drills share."""

from __future__ import annotations

import collections
import random
import shutil
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

from shared import synthetic
from shared.client import Client
from shared.config import Settings, TrainingSettings
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


def finish_drill(result: DrillResult, traffic: Traffic, database_url: str) -> DrillResult:
    traffic.stop()
    result.acked = len(traffic.acked)
    result.lost = lost_events(database_url, traffic.acked)
    result.codes = traffic.codes()
    return result


def wait_job(engine: Any, job_id: int, done: Callable[[Any], bool], deadline: float) -> Any:
    """The job once ``done(job)`` holds, or as it is at ``deadline``."""
    while True:
        with session_scope(engine) as session:
            job = job_store.get_job(session, job_id=job_id)
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def versions_of(engine: Any, job_id: int) -> tuple[list[int], list[int]]:
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


UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


def wait_until(condition: Callable[[], bool], deadline: float, every: float = 0.2) -> bool:
    """Whether ``condition()`` held before ``deadline`` (time.monotonic), polled."""
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every)


def own_queue(settings: Settings, broker_url: str, **worker: Any) -> Settings:
    """``settings`` on ``broker_url`` with a queue of the drill's own (and any other
    worker settings given), so that no other worker on the broker takes its jobs."""
    queue = f"recserve-drill-{uuid.uuid4().hex[:6]}"
    return settings.model_copy(
        update={
            "broker_url": broker_url,
            "worker": settings.worker.model_copy(update={"queue": queue, **worker}),
        }
    )
