"""`recserve train --wait` starts an embedded worker process when none runs. (A worker
process training a job to an active model on each broker, the embedded one, Redis and
RabbitMQ, is tests/worker/test_lifecycle.py's SIGKILL test: the surviving worker trains
the requeued job to the end.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.storage import event_store
from shared.storage.engine import make_engine, migrate, session_scope
from tests.conftest import TINY_SPEC, event_rows, make_settings

FAST = {"epochs": 3, "d_model": 8, "n_heads": 1, "max_len": 8, "activate": "always"}


@pytest.mark.timeout(240)
def test_train_wait_starts_an_embedded_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        event_store.insert_events(s, events=event_rows(TINY_SPEC))
    engine.dispose()
    env = dict(
        os.environ, RECSERVE_DATA_DIR=str(settings.data_dir), RECSERVE_WORKER__TORCH_THREADS="1"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recserve",
            "train",
            "--wait",
            "--param",
            "epochs=2",
            "--param",
            "d_model=8",
            "--param",
            "max_len=8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started an embedded worker" in result.stdout
    assert "epoch 2/2" in result.stdout
    assert "succeeded: model version 1" in result.stdout
