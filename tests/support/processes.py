"""recserve's own processes, started as an operator would start them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from shared.client import wait_serving
from shared.config import ClientSettings, Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process ``settings`` (plus RECSERVE_* extras)."""
    env = dict(os.environ)
    env.update(
        {
            "RECSERVE_DATA_DIR": str(settings.data_dir),
            "RECSERVE_DATABASE_URL": settings.database_url,
            "RECSERVE_BROKER_URL": settings.broker_url,
            "RECSERVE_LOG_LEVEL": "INFO",
            "RECSERVE_WORKER__QUEUE": settings.worker.queue,
            "RECSERVE_WORKER__TORCH_THREADS": "1",
            "RECSERVE_SERVER__MODEL_POLL_S": str(settings.server.model_poll_s),
            "RECSERVE_SERVER__INTRA_OP_THREADS": "1",
            "RECSERVE_SERVER__MAX_CONCURRENT_RPCS": "1000",
            "RECSERVE_SERVER__DRAIN_S": "0",
            "RECSERVE_TELEMETRY__METRICS_PORT": "0",
        }
    )
    if settings.models_dir:
        env["RECSERVE_MODELS_DIR"] = str(settings.models_dir)
    for name, value in settings.training.model_dump().items():
        if value is not None:  # the child trains with the same (tiny) defaults
            env[f"RECSERVE_TRAINING__{name.upper()}"] = str(value)
    env.update({f"RECSERVE_{k.upper()}": v for k, v in extra.items()})
    return env


class ServerProcess:
    """`recserve serve` in a child process (its own session, so a test can kill it)."""

    def __init__(
        self,
        settings: Settings,
        name: str = "server",
        *,
        port: int | None = None,
        wait: bool = True,
        tls: ClientSettings | None = None,
        **extra: str,
    ) -> None:
        self.tls = tls
        self.port = port or free_port()
        self.name = name
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = Path(settings.data_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        env = process_env(settings, SERVER__PORT=str(self.port), **extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recserve", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_serving()
        else:
            self.wait_serving(require_model=False)

    def wait_serving(self, timeout: float = 120.0, *, require_model: bool = True) -> None:
        """Until health says SERVING (or, without require_model, the server answers)."""
        if not wait_serving(
            self.target,
            timeout=timeout,
            alive=lambda: self.proc.poll() is None,
            require_model=require_model,
            tls=self.tls,
        ):
            raise RuntimeError(f"server {self.name} did not come up:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)


class WorkerProcess:
    """`recserve worker` (solo pool) in its own session; ``kill()`` SIGKILLs all of it."""

    def __init__(self, settings: Settings, name: str = "worker", *args: str, **extra: str) -> None:
        self.log_path = Path(settings.data_dir) / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recserve", "worker", "--pool", "solo", *args],
            env=process_env(settings, **extra),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the worker and every process it started: a machine that died."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """A warm shutdown (SIGTERM), as an operator stops a worker: it finishes its task
        first, and an idle one still waits out its broker poll (2-4 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def discard(self) -> None:
        """The end of a test that no longer needs the worker: SIGKILL, no warm shutdown
        (tests of stopping call ``stop``)."""
        self.kill()
        self.log.close()
