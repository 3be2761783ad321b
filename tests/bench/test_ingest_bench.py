"""`recserve bench ingest` end to end on SQLite, briefly: the three servers run, the
table and the JSON come out with the figures the README quotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ingest import IngestSpec, run_ingest_bench
from shared.config import Settings

# It starts `recserve serve` processes through the benchmark's own code.
pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def test_ingest_bench_runs_and_reports(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RECSERVE_SERVER__DRAIN_S", "0")  # each server stops at once
    output = tmp_path / "ingest.json"
    spec = IngestSpec(duration=0.1, streams=1, batch=100, callers=4)
    report = run_ingest_bench(
        Settings(data_dir=tmp_path / "bench"),
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        spec=spec,
        output=output,
    )
    assert json.loads(output.read_text())["events_per_s"] == report["events_per_s"] > 0
    assert report["vs_naive"] > 1, "group commit beats a commit per event"
    assert set(report["servers"]) == {"recserve", "recserve-no-invalidation", "naive"}
    for row in report["servers"].values():
        assert row["bulk"]["events"] > 0 and row["single"]["p99_ms"] >= row["single"]["p50_ms"]
    assert "recserve vs naive" in capsys.readouterr().out
