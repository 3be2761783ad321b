"""`make run` under hostile traffic: the demo (`recserve demo`, the README's first
command) as its own process, fuzzed during its first training by the project's fuzzer
(tests/fuzz, aimed at it with RECSERVE_FUZZ_TARGET), 64 held FeedbackStreams included.
The fuzzer flags nothing, and the demo's training completes and serves.

Left out against the demo, because they would legitimately cancel or replace its job:
StartTraining, CancelJob, ActivateModel, RollbackModel, PruneModels, SetTrafficSplit and
PromoteArm (tests/fuzz/test_fuzz.py, DISRUPTIVE).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import free_port
from tests.support.waits import wait_until

# Half a minute of fuzzing a live demo: it runs with `make fuzz`, beside the fuzzer's own
# long run, not in `make test`.
pytestmark = [pytest.mark.timeout(600), pytest.mark.drill]
ROOT = Path(__file__).resolve().parent.parent


def test_the_fuzzer_against_the_demo_during_its_first_training(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var"
    env = {
        **os.environ,
        "RECSERVE_DATA_DIR": str(data),
        "RECSERVE_SERVER__PORT": str(port),
        "RECSERVE_TELEMETRY__METRICS_PORT": "0",
        "RECSERVE_WORKER__TORCH_THREADS": "1",
    }
    for name in list(env):  # the demo as a user runs it: no test settings leak in
        if name.startswith("RECSERVE_TRAINING__"):
            del env[name]
    log = (tmp_path / "demo.log").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "recserve", "demo", "--exit", "--epochs", "6"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    try:

        def training() -> bool:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            return "following it" in (tmp_path / "demo.log").read_text()

        wait_until(training, "the demo started training", timeout=180, every=0.2)
        fuzz = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-x",
             "tests/fuzz/test_fuzz.py", "-k", "not postgresql"],
            env={
                **env,
                "RECSERVE_FUZZ_TARGET": f"127.0.0.1:{port}",
                "RECSERVE_FUZZ_DATABASE_URL": f"sqlite:///{data / 'recserve.db'}",
            },
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )  # fmt: skip
        assert fuzz.returncode == 0, fuzz.stdout[-4000:] + fuzz.stderr[-2000:]
        assert "fuzzed" in fuzz.stdout and "against 127.0.0.1" in fuzz.stdout
        code = demo.wait(timeout=300)
        output = (tmp_path / "demo.log").read_text()
        assert code == 0, output[-3000:]
        assert "model version 1" in output and "SOURCE_MODEL" in output
        assert "Traceback" not in output
    finally:
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
        log.close()
