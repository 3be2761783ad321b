"""The fault drills (bench/drill.py, `recserve drill`) as tests: real server and worker
processes under traffic, a fault each; no acknowledged event lost, no INTERNAL, and each
drill's own checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.drill import DRILLS
from tests.conftest import require_service

pytestmark = [pytest.mark.drill, pytest.mark.timeout(300)]


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill(name: str, tmp_path: Path) -> None:
    if name in ("database", "broker", "fencing"):
        require_service("PostgreSQL", "127.0.0.1", 5432)
    if name in ("broker", "fencing"):
        require_service("Redis", "127.0.0.1", 6379)
    if name == "disk-full" and os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full drill mounts a tmpfs, which needs root")
        pytest.skip("the disk-full drill mounts a tmpfs, which needs root")
    result = DRILLS[name](tmp_path, 1.0)
    assert result.lost == 0, f"{result.lost} acknowledged events lost"
    assert result.unexpected == 0, result.codes
    assert all(result.checks.values()), (result.checks, result.notes)
