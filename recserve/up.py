"""`recserve up` (`make run-distributed`): a local production stack.

N server replicas, M Celery workers and one beat, on PostgreSQL and Redis (or RabbitMQ),
run by honcho, the Procfile runner: their output is interleaved with a name per line,
Ctrl-C stops all of them, and if one of them dies the others are stopped too (so a
broken stack never looks healthy). Every endpoint is printed first.

The stack is the distributed configuration on one host: every process gets the same
settings (database, broker, shared models directory), replicas listen on 127.0.0.1 on
consecutive ports from ``--port``, and every process exports Prometheus metrics on its
own port.
With ``--demo`` the synthetic demo log is sent through the first replica and a training
job is queued when no model is active, so the stack serves a model within a minute or two.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from shared.config import Settings
from shared.storage.engine import ensure_database

BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/recserve"


@dataclass(frozen=True)
class Stack:
    replicas: int
    workers: int
    database_url: str
    broker_url: str
    port: int
    metrics_port: int
    data_dir: Path

    def processes(self) -> list[tuple[str, list[str], dict[str, str]]]:
        """(name, argv, extra environment) of every process."""
        python = [sys.executable, "-m", "recserve"]
        procs = []
        for n in range(self.replicas):
            procs.append(
                (
                    f"server.{n + 1}",
                    [*python, "serve", "--host", "127.0.0.1", "--port", str(self.port + n)],
                    {"RECSERVE_TELEMETRY__METRICS_PORT": str(self.metrics_port + n)},
                )
            )
        for n in range(self.workers):
            procs.append(
                (
                    f"worker.{n + 1}",
                    [*python, "worker", "--concurrency", "1"],
                    {"RECSERVE_TELEMETRY__METRICS_PORT": str(self.metrics_port + 100 + n)},
                )
            )
        procs.append(("beat", [*python, "beat"], {"RECSERVE_TELEMETRY__METRICS_PORT": "0"}))
        return procs

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RECSERVE_DATABASE_URL": self.database_url,
                "RECSERVE_BROKER_URL": self.broker_url,
                "RECSERVE_DATA_DIR": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Two server processes on two cores: one ONNX Runtime thread each.
        env.setdefault("RECSERVE_SERVER__INTRA_OP_THREADS", "1")
        return env

    def endpoints(self) -> str:
        lines = [
            f"database  {make_url(self.database_url).render_as_string(hide_password=True)}",
            f"broker    {make_url(self.broker_url).render_as_string(hide_password=True)}",
            f"models    {self.data_dir / 'models'} (shared by every process)",
        ]
        for n in range(self.replicas):
            lines.append(
                f"server.{n + 1}  grpc 127.0.0.1:{self.port + n}   "
                f"metrics http://127.0.0.1:{self.metrics_port + n}/metrics"
            )
        for n in range(self.workers):
            lines.append(
                f"worker.{n + 1}  metrics http://127.0.0.1:{self.metrics_port + 100 + n}/metrics"
            )
        lines.append("beat      retraining schedule and volume trigger (RECSERVE_WORKER__*)")
        lines.append(
            f"console   recserve tui --target 127.0.0.1:{self.port}   (Ctrl-C here stops all)"
        )
        return "\n".join(lines)


def reachable(url: str, default_port: int) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or default_port), 2):
            return True
    except OSError:
        return False


def seed_demo(stack: Stack, settings: Settings) -> None:
    """Sends the synthetic log through the first replica and queues training if no
    model is active (in a thread beside the running stack)."""
    import grpc

    from recserve.demo import DEMO_PARAMS, requests_for
    from shared import synthetic
    from shared.client import Client, client_token, wait_serving
    from shared.proto.recserve.v1 import admin_pb2

    target = f"127.0.0.1:{stack.port}"
    wait_serving(target, timeout=120, require_model=False)
    client = Client(target, client_token(settings), settings.client)
    try:
        answer = client.recommender.FeedbackStream(
            requests_for(synthetic.SyntheticSpec()), metadata=client.metadata, timeout=600
        )
        print(f"[demo] {answer.stored:,} events stored, {answer.duplicates:,} already there")
        models = client.admin.ListModels(admin_pb2.ListModelsRequest(), metadata=client.metadata)
        if not models.active_version:
            import json

            job = client.admin.StartTraining(
                admin_pb2.StartTrainingRequest(params_json=json.dumps(DEMO_PARAMS)),
                metadata=client.metadata,
                timeout=30,
            )
            print(f"[demo] training job {job.id} queued; the replicas load the model when done")
    except grpc.RpcError as exc:
        print(f"[demo] seeding failed: {exc.details()}")  # type: ignore[attr-defined]
    finally:
        client.close()


def run_up(
    settings: Settings,
    *,
    replicas: int,
    workers: int,
    broker: str,
    database_url: str | None,
    port: int,
    metrics_port: int,
    demo: bool,
) -> int:
    from honcho.manager import Manager

    from shared.storage.engine import migrate

    stack = Stack(
        replicas=replicas,
        workers=workers,
        database_url=database_url or settings.database_url or DEFAULT_DATABASE,
        broker_url=BROKERS.get(broker, broker),
        port=port,
        metrics_port=metrics_port,
        data_dir=settings.data_dir.resolve(),
    )
    for name, url, default in (
        ("PostgreSQL", stack.database_url, 5432),
        ("the broker", stack.broker_url, 6379),
    ):
        if make_url(url).get_backend_name() != "sqlite" and not reachable(url, default):
            print(f"error: {name} at {url} is not reachable; start it, or pass another URL")
            return 2
    ensure_database(stack.database_url)
    migrate(stack.database_url)
    print(stack.endpoints(), flush=True)
    manager = Manager()
    env = stack.environment()
    for name, argv, extra in stack.processes():
        manager.add_process(name, shlex.join(argv), env={**env, **extra})
    if demo:
        seeded = settings.model_copy(
            update={"database_url": stack.database_url, "broker_url": stack.broker_url}
        )
        threading.Thread(target=seed_demo, args=(stack, seeded), daemon=True).start()
    manager.loop()
    return int(manager.returncode or 0)
