"""The committed gRPC stubs must match what protos/ generates."""

from __future__ import annotations

from pathlib import Path

from shared.proto_gen import OUT, generate


def test_stubs_are_fresh(tmp_path: Path) -> None:
    generated = generate(tmp_path / "proto")
    assert generated
    for path in generated:
        relative = path.relative_to(tmp_path / "proto")
        committed = OUT / relative
        assert committed.exists(), f"{committed} is missing: run `make protos`"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make protos`"
