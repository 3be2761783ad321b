"""Shown-item capping on real servers: a user who ignores every list sees none of the
first list's items in the (N+1)-th, counted as lists are served (not when the impression
log writes them); a request can switch it off or set its own cap; and a list served by
one replica counts on another within 2 seconds (PostgreSQL and SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.proto.recserve.v1 import recommender_pb2 as pb
from tests.conftest import make_settings
from tests.support.replicas import two_replicas
from tests.support.waits import eventually

N = 2


def listed(answer: pb.RecommendResponse) -> list[str]:
    return [item.item_id for item in answer.items]


async def test_a_user_who_ignores_every_list_sees_none_of_the_first_in_the_n_plus_first(
    data_dir: Path,
) -> None:
    from server.app import start_server
    from shared.client import AsyncClient

    running = await start_server(make_settings(data_dir, shown_cap=N))
    client = AsyncClient(running.target)
    try:
        ask = pb.RecommendRequest(user_id="u00005", k=5)
        lists = [listed(await client.recommender.Recommend(ask)) for _ in range(N + 1)]
        assert lists[0] == lists[1], "the same list twice: nothing was shown N times yet"
        assert not set(lists[0]) & set(lists[N]), lists
        assert len(lists[N]) == 5, "the list is filled with the next best items"
        # Counted when served: the impression log has not written them yet.
        assert running.parts.impressions.queued > 0 or running.parts.impressions.written < N + 1
        # A request can switch it off, or ask for its own cap.
        off = await client.recommender.Recommend(
            pb.RecommendRequest(user_id="u00005", k=5, shown_cap=-1)
        )
        assert listed(off) == lists[0]
        fresh = pb.RecommendRequest(user_id="u00006", k=5, shown_cap=1, shown_window_hours=1)
        first = listed(await client.recommender.Recommend(fresh))
        second = listed(await client.recommender.Recommend(fresh))
        assert not set(first) & set(second)
        # Acting on an item resets its count: clicked, it may come back.
        clicked = lists[0][0]
        await client.recommender.Feedback(
            pb.FeedbackRequest(
                events=[pb.Event(event_id="e-shown-1", user_id="u00005", item_id=clicked)]
            )
        )
        again = listed(
            await client.recommender.Recommend(
                pb.RecommendRequest(user_id="u00005", k=5, allow_seen=True)
            )
        )
        assert clicked in again, again
    finally:
        await client.close()
        await running.stop(0)


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
async def test_a_list_served_by_one_replica_counts_on_another_within_two_seconds(
    request: pytest.FixtureRequest, tmp_path: Path, engine_name: str
) -> None:
    async with two_replicas(request, tmp_path, engine_name, shown_cap=N) as (
        a,
        b,
        client_a,
        client_b,
    ):
        ask = pb.RecommendRequest(user_id="visitor", k=4)
        shown_b = b.parts.recommend.shown
        # B reads the user's (empty) showings first: only the invalidation can change them.
        assert await shown_b.capped("visitor", N, 3600.0, dict) == frozenset()
        served = [listed(await client_a.recommender.Recommend(ask)) for _ in range(N)]
        assert served[0] == served[1]

        async def b_counts_them() -> bool:  # B's count, without B serving (and counting)
            return await shown_b.capped("visitor", N, 3600.0, dict) == set(served[0])

        await eventually(b_counts_them, "B counts A's lists", timeout=2.0, every=0.05)
        answer = listed(await client_b.recommender.Recommend(ask))
        assert answer and not set(served[0]) & set(answer), answer
