"""Servers under test, each a `recserve serve` child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from shared.client import Client, wait_serving
from shared.config import Settings
from shared.proto.recserve.v1 import admin_pb2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`recserve serve` on a free port with ``settings``' data folder, database and
    broker, plus extra RECSERVE_SERVER__* settings."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        server: dict[str, str] | None = None,
        *,
        require_model: bool = True,
        env: dict[str, str] | None = None,
        naive: bool = False,
        source: Path | None = None,
    ) -> None:
        """``naive``: the benchmarks' naive baseline (bench/naive.py) instead of
        `recserve serve`. ``source``: another checkout of recserve (an earlier commit) to
        run instead of this one, with the same interpreter and dependencies: the "before"
        of a before/after comparison."""
        self.port = free_port()
        self.metrics_port = free_port()
        self.name = name
        base = {
            "RECSERVE_DATA_DIR": str(settings.data_dir.resolve()),
            "RECSERVE_DATABASE_URL": settings.database_url,
            "RECSERVE_BROKER_URL": settings.broker_url,
            "RECSERVE_SERVER__PORT": str(self.port),
            "RECSERVE_LOG_LEVEL": "WARNING",
            "RECSERVE_TELEMETRY__METRICS_PORT": str(self.metrics_port),
        }
        environment = {**os.environ, **base, **(env or {})}
        if source is not None:
            environment["PYTHONPATH"] = str(source.resolve())
        environment.update({f"RECSERVE_SERVER__{k.upper()}": v for k, v in (server or {}).items()})
        self.log = (settings.data_dir / f"server-{name}.log").open("wb")
        command = ["-m", "bench.naive"] if naive else ["-m", "recserve", "serve"]
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            env=environment,
            cwd=source,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.target = f"127.0.0.1:{self.port}"
        if not wait_serving(
            self.target,
            timeout=120,
            alive=lambda: self.proc.poll() is None,
            require_model=require_model,
        ):
            raise RuntimeError(f"server {self.name} did not come up; see {self.log.name}")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all its threads;
        Linux's /proc, 0.0 where there is none)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_counters(self) -> tuple[int, int]:
        client = Client(self.target)
        try:
            stats = client.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=5)
            return stats.batches_total, stats.batched_histories_total
        finally:
            client.close()

    def stage_seconds(self) -> dict[str, tuple[float, int]]:
        """The server's recserve_stage_seconds histogram: (sum of seconds, count) per
        pipeline stage, scraped from its Prometheus endpoint ({} if it has none)."""
        import re
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        found: dict[str, list[float]] = {}
        pattern = r'^recserve_stage_seconds_(sum|count)\{stage="([a-z]+)"\} (\S+)$'
        for kind, stage, value in re.findall(pattern, text, flags=re.MULTILINE):
            found.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
        return {stage: (pair[0], int(pair[1])) for stage, pair in found.items()}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class WorkerProcess:
    """`recserve worker --pool solo` with ``settings``' database and broker."""

    def __init__(self, settings: Settings, name: str, env: dict[str, str] | None = None) -> None:
        environment = {
            **os.environ,
            "RECSERVE_DATA_DIR": str(settings.data_dir),
            "RECSERVE_DATABASE_URL": settings.database_url,
            "RECSERVE_BROKER_URL": settings.broker_url,
            "RECSERVE_WORKER__QUEUE": settings.worker.queue,
            "RECSERVE_WORKER__TORCH_THREADS": "1",
            "RECSERVE_TELEMETRY__METRICS_PORT": "0",
            **(env or {}),
        }
        self.log = (settings.data_dir / f"worker-{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recserve", "worker", "--pool", "solo"],
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL to the worker and everything it started."""
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def _status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (kB for sizes), 0 when it is not there."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return _status(pid, "VmRSS") / 1024


def threads(pid: int) -> int:
    """The process's threads (a model swap that leaves a session's pool behind shows here)."""
    return _status(pid, "Threads")
