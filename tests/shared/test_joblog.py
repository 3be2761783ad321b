"""Following a job's log from the command line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_job_log_following_survives_a_full_log() -> None:
    from shared.training.joblog import unseen_lines

    assert unseen_lines(["a", "b"], None) == ["a", "b"]
    assert unseen_lines(["b", "c", "d"], "b") == ["c", "d"], "window slid past the start"
    assert unseen_lines(["c", "d"], "d") == []
    assert unseen_lines(["x", "y"], "gone") == ["x", "y"]
