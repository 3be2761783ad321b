"""The committed gRPC stubs must match what protos/ generates, whatever grpcio-tools made them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.wire.proto_gen import OUT, PROTO_ROOT, generate, stale_stubs, without_stamps

pytestmark = pytest.mark.unit


def test_stubs_are_fresh(tmp_path: Path) -> None:
    generated = generate(tmp_path / "proto")
    assert generated
    assert stale_stubs(OUT, generated, tmp_path / "proto") == []


def test_a_changed_proto_makes_the_stubs_stale(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, protos)
    proto = protos / "recserve" / "v1" / "recommender.proto"
    proto.write_text(proto.read_text() + "\nmessage AddedLater { string note = 1; }\n")
    generated = generate(tmp_path / "proto", proto_root=protos)
    problems = stale_stubs(OUT, generated, tmp_path / "proto")
    assert any("recommender_pb2.py is stale" in problem for problem in problems), problems


def test_another_generator_release_is_not_staleness() -> None:
    committed = (OUT / "recserve" / "v1" / "admin_pb2_grpc.py").read_text()
    older = committed.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '0.")
    assert older != committed
    assert without_stamps(older) == without_stamps(committed)
    pb2 = (OUT / "recserve" / "v1" / "admin_pb2.py").read_text()
    bumped = pb2.replace("# Protobuf Python Version: ", "# Protobuf Python Version: 9").replace(
        "_runtime_version.Domain.PUBLIC,\n    ", "_runtime_version.Domain.PUBLIC,\n    9"
    )
    assert bumped != pb2
    assert without_stamps(bumped) == without_stamps(pb2)
