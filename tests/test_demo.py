"""`make run`, the README's first command, as a user runs it: `recserve demo` as its own
process on the embedded default (no external service), with a short training so that the
test stays short. It trains, serves, answers its own Recommend from the model, and exits
cleanly. (`make fuzz` also runs it under the project's fuzzer: tests/test_demo_under_fuzz.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_trains_serves_and_exits(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RECSERVE_DATA_DIR": str(tmp_path / "var"),
        "RECSERVE_SERVER__PORT": "0",
        "RECSERVE_TELEMETRY__METRICS_PORT": "0",
    }
    for name in list(env):  # the demo as a user runs it: no test settings leak in
        if name.startswith("RECSERVE_TRAINING__"):
            del env[name]
    done = subprocess.run(
        [sys.executable, "-m", "recserve", "demo", "--exit", "--epochs", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "model version 1" in output and "SOURCE_MODEL" in output, output[-3000:]
    assert "Traceback" not in output
