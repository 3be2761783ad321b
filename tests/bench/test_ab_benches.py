"""The one-server A/B benchmarks, each a tiny run through the CLI: `recserve bench rules`
(no rules against ten), `bench http` (HTTP/JSON against gRPC) and `bench
similar-latency` (SimilarItems against Recommend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recserve.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.bench]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bench database for the three: the model and histories are stored once."""
    return tmp_path_factory.mktemp("ab-bench")


@pytest.mark.parametrize(
    ("kind", "sides"),
    [
        ("rules", {"none", "ten rules"}),
        ("similar-latency", {"Recommend", "SimilarItems"}),
        ("http", {"grpc", "http"}),
    ],
)
def test_a_tiny_interleaved_run(
    data_dir: Path, tmp_path: Path, capsys, kind: str, sides: set[str]
) -> None:
    out = tmp_path / f"{kind}.json"
    args = ["bench", kind, "--data-dir", str(data_dir), "--output", str(out)]
    assert main([*args, "--rounds", "1", "--duration", "0.5"]) == 0
    result = json.loads(out.read_text())
    assert set(result["median"]) == sides and result["rounds"] == 1
    assert result["errors"] == 0
    for figures in result["median"].values():
        assert figures["throughput"] > 0 and figures["p99_ms"] > 0
    assert result["p99_ratio"] > 0 and result["throughput_ratio"] > 0
    assert "median of 1 interleaved rounds" in capsys.readouterr().out


def test_properties_against_id_only_serving(tmp_path: Path, capsys) -> None:
    """`bench props`: two servers, one with an item-property model, both traffics."""
    out = tmp_path / "props.json"
    args = ["bench", "props", "--data-dir", str(tmp_path / "stage"), "--output", str(out)]
    assert main([*args, "--rounds", "1", "--duration", "0.5", "--levels", "2"]) == 0
    bundle = tmp_path / "stage/properties/models/bench-properties"
    config = json.loads((bundle / "config.json").read_text())
    assert config["property_tokens"] > 1
    for traffic in ("cold", "mixed"):
        result = json.loads((tmp_path / f"props-{traffic}-c2.json").read_text())
        assert set(result["median"]) == {"id only", "properties"} and result["errors"] == 0
        assert all(f["throughput"] > 0 for f in result["median"].values())
    assert "properties / id only" in capsys.readouterr().out
