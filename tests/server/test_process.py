"""`recserve serve` as a real process: several workers on one port, uvloop, clean stop."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from server.app import loop_factory
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.proto.recserve.v1 import recommender_pb2_grpc
from tests.support.processes import ServerProcess


def test_two_worker_processes_serve_one_port_and_stop_cleanly(settings) -> None:
    server = ServerProcess(settings, "workers", SERVER__WORKERS="2", SERVER__EVENT_LOOP="uvloop")
    try:
        answers = []
        for _ in range(8):  # a new connection each time: the kernel spreads them
            with grpc.insecure_channel(server.target) as channel:
                stub = recommender_pb2_grpc.RecommenderStub(channel)
                answers.append(
                    stub.Recommend(pb.RecommendRequest(user_id="u00007", k=3), timeout=30)
                )
        assert all(a.source == pb.SOURCE_MODEL and len(a.items) == 3 for a in answers), answers
        assert len({tuple(i.item_id for i in a.items) for a in answers}) == 1, "same model"
    finally:
        assert server.stop(timeout=60) == 0, "SIGTERM drains and exits 0"


def test_event_loop_choice() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    loop = loop_factory("uvloop")()  # type: ignore[misc]
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
