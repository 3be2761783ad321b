"""Embedded-mode helpers: is a worker running, and starting one as a child process.

A worker on the embedded (SQLite) broker holds a shared lock on {data_dir}/worker.lock
for its lifetime; if an exclusive lock can be taken, no worker is running.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from shared.config import Settings


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / "worker.lock"


def hold_worker_lock(settings: Settings) -> IO[str]:
    """Called by a worker: holds the shared lock until the process exits."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = lock_path(settings).open("a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def worker_running(settings: Settings) -> bool:
    path = lock_path(settings)
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def start_worker(settings: Settings, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts `recserve worker` as a child process with the same settings (environment)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file or settings.data_dir / "worker.log"
    env = dict(os.environ)
    env["RECSERVE_DATA_DIR"] = str(settings.data_dir)
    env["RECSERVE_DATABASE_URL"] = settings.database_url
    env["RECSERVE_BROKER_URL"] = settings.broker_url
    if settings.models_dir:
        env["RECSERVE_MODELS_DIR"] = str(settings.models_dir)
    port = settings.telemetry.metrics_port
    # The server beside it exports on the configured port; the worker takes the next one.
    env["RECSERVE_TELEMETRY__METRICS_PORT"] = str(port + 1 if port else 0)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "recserve", "worker"], env=env, stdout=log, stderr=log
        )
