"""`recserve bench scale` end to end on a tiny catalogue: the import, the training
process, exact vs index, and two real servers, into its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recserve.cli import main

# It starts `recserve serve` processes through the benchmark's own code.
pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def test_bench_scale_writes_every_figure(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RECSERVE_SERVER__DRAIN_S", "0")  # the servers stop at once
    out = tmp_path / "scale.json"
    code = main(
        [
            "bench", "scale", "--data-dir", str(tmp_path / "var"), "--sizes", "600:300:4000",
            "--steps", "5", "--duration", "1", "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    (row,) = json.loads(out.read_text())["sizes"]
    assert row["items"] == 600 and row["events"] >= 3000
    assert row["import_events_per_s"] > 0 and row["train_events_per_s"] > 0
    assert 100 < row["peak_rss_mb"] < 4096
    assert 0.95 <= row["index_recall@10"] <= 1.0
    for name in ("exact", "index"):
        assert row[f"{name}_rps"] > 0 and 0 < row[f"{name}_p50_ms"] <= row[f"{name}_p99_ms"]
    assert "index p50/p99" in capsys.readouterr().out
