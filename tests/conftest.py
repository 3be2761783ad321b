"""Shared fixtures: throwaway databases, a tiny trained model, an in-process server.

Tests that need an external service (PostgreSQL, Redis) skip with a reason when it is
unreachable, except under CI=true, where they must run. RECSERVE_TEST_SERVICES=off leaves
them out on purpose (`make test-latest` runs without external services).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from shared import synthetic
from shared.config import ServerSettings, Settings, TrainingSettings
from shared.storage import event_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import FeedbackEventCreate

TINY_SPEC = synthetic.SyntheticSpec(n_users=150, n_topics=4, items_per_topic=10, seed=3)
TINY_TRAINING = TrainingSettings(
    epochs=12,
    batch_size=32,
    learning_rate=0.01,
    warmup_steps=5,
    max_len=12,
    d_model=16,
    n_heads=2,
    n_blocks=1,
    dropout=0.1,
    patience=4,
)


def event_rows(spec: synthetic.SyntheticSpec) -> list[FeedbackEventCreate]:
    return [
        FeedbackEventCreate(
            event_id=e.event_id,
            user_id=e.user_id,
            item_id=e.item_id,
            kind=e.kind,
            value=e.value,
            event_time=datetime.fromtimestamp(e.timestamp_ms / 1000, UTC),
        )
        for e in synthetic.events(spec)
    ]


def make_settings(data_dir: Path, **server: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        # Tests fire bursts of concurrent calls on purpose; the overload tests set their caps.
        server=ServerSettings(
            port=0,
            model_poll_s=0.2,
            intra_op_threads=1,
            max_concurrent_rpcs=1000,
            drain_s=0,
            **server,  # type: ignore[arg-type]
        ),
        training=TINY_TRAINING,
    )


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if os.environ.get("RECSERVE_TEST_SERVICES") == "off":
        pytest.skip(f"{name}: external services are off for this run (RECSERVE_TEST_SERVICES)")
    if service_reachable(host, port):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} at {host}:{port} is unreachable, and CI=true requires it")
    pytest.skip(f"{name} at {host}:{port} is unreachable")


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the tiny synthetic log and one trained, active model (built once),
    trained through the one door to training (its message waits on the embedded broker)."""
    from shared.training.jobs import submit_training
    from worker.pipeline import run_train_job

    root = tmp_path_factory.mktemp("template")
    settings = make_settings(root)
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as session:
        event_store.insert_events(session, events=event_rows(TINY_SPEC))
    job = submit_training(settings, engine, None)
    version = run_train_job(settings, int(job.id or 0))
    assert version == 1
    engine.dispose()
    return root


@pytest.fixture
def data_dir(tmp_path: Path, trained_template: Path) -> Path:
    """A private copy of the template's database and bundles (a tiny model: a few kB)."""
    target = tmp_path / "var"
    target.mkdir()
    shutil.copy(trained_template / "recserve.db", target / "recserve.db")
    shutil.copytree(trained_template / "models", target / "models")
    return target


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
def empty_settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path / "empty")
    migrate(settings.db_url)
    return settings


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[object]:
    from server.app import start_server

    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def client(server: object) -> AsyncIterator[object]:
    from shared.client import AsyncClient

    c = AsyncClient(server.target)  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        await c.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_server(
    tmp_path_factory: pytest.TempPathFactory, trained_template: Path
) -> AsyncIterator[object]:
    """One server for a whole module, for tests that only read or are refused (they
    run on the module's event loop: ``@pytest.mark.asyncio(loop_scope="module")``)."""
    from server.app import start_server

    target = tmp_path_factory.mktemp("module") / "var"
    target.mkdir()
    shutil.copy(trained_template / "recserve.db", target / "recserve.db")
    shutil.copytree(trained_template / "models", target / "models")
    running = await start_server(make_settings(target))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_client(module_server: object) -> AsyncIterator[object]:
    from shared.client import AsyncClient

    c = AsyncClient(module_server.target)  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    from sqlalchemy import create_engine, text

    name = f"recserve_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def both_engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A migrated throwaway database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


# The test pyramid. `unit`: marked in the file (``pytestmark = pytest.mark.unit``); no
# sockets and no sleeps, which the guard below enforces. `e2e`: real processes or a real
# server (the `server` and `client` fixtures, or a module that starts processes).
# `integration`: everything else (a real database, no server). `make test-unit`,
# `make test-integration` and `make test-e2e` run one layer each.
PROCESS_WORDS = ("ServerProcess", "WorkerProcess", "subprocess", "start_server", "pexpect")


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test with its layer, then runs the layers in order, fastest first."""
    sources: dict[str, str] = {}
    for item in items:
        if any(item.get_closest_marker(layer) for layer in LAYERS):
            continue
        path = str(item.path)
        if path not in sources:
            sources[path] = item.path.read_text()
        fixtures = set(getattr(item, "fixturenames", ()))
        uses_processes = any(word in sources[path] for word in PROCESS_WORDS)
        if fixtures & {"server", "client", "module_server", "module_client"} or uses_processes:
            item.add_marker(pytest.mark.e2e)
        else:
            item.add_marker(pytest.mark.integration)
    order = {layer: n for n, layer in enumerate(LAYERS)}
    items.sort(key=lambda item: order[next(x for x in LAYERS if item.get_closest_marker(x))])


LAYER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    layer = next((x for x in LAYERS if x in report.keywords), "")
    if layer:
        LAYER_SECONDS[layer] = LAYER_SECONDS.get(layer, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LAYER_SECONDS:
        times = ", ".join(f"{x} {LAYER_SECONDS[x]:.1f} s" for x in LAYERS if x in LAYER_SECONDS)
        terminalreporter.write_line(f"time per layer (setup, call and teardown): {times}")


class UnitLayerViolation(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_layer_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that opens a network socket or sleeps fails: it belongs to another
    layer, or needs a fake (a fake backend, an injectable clock)."""
    if not request.node.get_closest_marker("unit"):
        return
    import asyncio
    import time

    real_connect, real_bind = socket.socket.connect, socket.socket.bind
    real_async_sleep = asyncio.sleep

    def refuse(what: str) -> UnitLayerViolation:
        return UnitLayerViolation(f"a unit test may not {what}: move it to another layer")

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise refuse("open a network connection")
        real_connect(self, address)  # type: ignore[arg-type]

    def bind(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise refuse("listen on a port")
        real_bind(self, address)  # type: ignore[arg-type]

    def sleep(seconds: float) -> None:
        if seconds > 0:
            raise refuse(f"sleep ({seconds} s)")

    async def async_sleep(seconds: float, result: object = None) -> object:
        if seconds > 0:
            raise refuse(f"sleep ({seconds} s)")
        return await real_async_sleep(0, result)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(asyncio, "sleep", async_sleep)
