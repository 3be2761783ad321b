"""`make security`'s fast rows, as CI runs them: each attack against a real server process
on the tests' tiny model, every row passing, a table printed and JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench


def test_the_fast_attacks_all_fail_as_expected(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSERVE_SERVER__DRAIN_S", "0")  # the servers stop at once
    output = tmp_path / "security.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.security",
            "--fast",
            "--data-dir",
            str(data_dir),
            "--users",
            "20",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert report["passed"] and len(report["rows"]) >= 6
    assert all(row["passed"] for row in report["rows"])
    assert "| attack | expected | observed |" in done.stdout
