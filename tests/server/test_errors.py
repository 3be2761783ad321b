"""Paths that only faults take: anything unexpected becomes INTERNAL (with the traceback
in the log, not in the answer), and the history TTL re-reads what another writer stored."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import grpc
import pytest

from server.app import start_server
from shared.client import AsyncClient
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store
from shared.storage.engine import session_scope
from shared.storage.ingest import EventRow
from tests.support.waits import eventually


async def test_an_unexpected_error_is_internal_and_logged(server, client, caplog) -> None:
    async def broken(_query):
        raise RuntimeError("secret detail of the server")

    server.parts.recommend.recommend = broken
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as err:
        await client.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error (RuntimeError); see the server log"
    assert "secret detail" not in str(err.value.trailing_metadata())
    logged = [r for r in caplog.records if r.exc_info and "unexpected error" in r.getMessage()]
    assert logged and "secret detail of the server" in str(logged[0].exc_info[1])


async def test_the_history_ttl_reads_events_another_writer_stored(settings) -> None:
    ttl = settings.model_copy(
        update={"server": settings.server.model_copy(update={"history_ttl_s": 0.5})}
    )
    running = await start_server(ttl)
    client = AsyncClient(running.target)
    try:
        before = await client.recommender.Recommend(
            pb.RecommendRequest(user_id="fresh", history=[])
        )
        assert before.history_used == 0
        with session_scope(running.engine) as session:  # a writer the server never hears of
            event_store.insert_events(
                session,
                events=[
                    EventRow("outside-1", "fresh", "i000-001", "click", 1.0, datetime.now(UTC))
                ],
            )
        cached = await client.recommender.Recommend(pb.RecommendRequest(user_id="fresh"))
        assert cached.history_used == 0, "still the cached history"

        async def read_again() -> bool:
            answer = await client.recommender.Recommend(pb.RecommendRequest(user_id="fresh"))
            return answer.history_used == 1

        await eventually(read_again, "the history read again after the TTL", timeout=10)
    finally:
        await client.close()
        await running.stop(0)


def test_history_expiry_is_spread_over_half_the_ttl() -> None:
    """Users cached together must not all expire together (a herd of re-reads)."""
    from server.history import expiry

    ttu = expiry(300.0)
    deadlines = [ttu(f"user-{n}", None, 1000.0) - 1000.0 for n in range(2000)]
    assert 150.0 <= min(deadlines) and max(deadlines) < 300.0
    assert max(deadlines) - min(deadlines) > 140.0, "spread over the whole half"
    assert ttu("user-7", None, 0.0) == ttu("user-7", None, 0.0), "fixed per user"
