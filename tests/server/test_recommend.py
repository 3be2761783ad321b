"""Recommend/Feedback over a real gRPC server on port 0, with a tiny trained model."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from shared.proto.recserve.v1 import recommender_pb2 as pb
from tests.conftest import TINY_SPEC
from tests.support.waits import eventually

USER = "u00007"


async def test_recommend_returns_model_ranked_items(client, server) -> None:
    response = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=5))
    assert response.source == pb.SOURCE_MODEL
    assert response.model_version == 1
    assert len(response.items) == 5
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    history = await server.history.get(USER)
    assert response.history_used == min(len(history), 12)
    assert not {item.item_id for item in response.items} & set(history), "seen items excluded"


async def test_feedback_changes_the_next_recommendation(client, server) -> None:
    before = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=10))
    # Click a whole different series; the next answer must follow it.
    clicks = [f"i003-{p:03d}" for p in range(0, 6)]
    now = int(time.time() * 1000)
    answer = await client.recommender.Feedback(
        pb.FeedbackRequest(
            events=[
                pb.Event(
                    event_id=f"fb-{i}",
                    user_id=USER,
                    item_id=item,
                    kind="click",
                    timestamp_ms=now + i,
                )
                for i, item in enumerate(clicks)
            ]
        )
    )
    assert (answer.stored, answer.duplicates) == (6, 0)
    after = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=10))
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert not {i.item_id for i in after.items} & set(clicks), "clicked items are now seen"
    history = await server.history.get(USER)
    assert history[-6:] == clicks


async def test_feedback_is_idempotent_and_durable(client, server) -> None:
    event = pb.Event(event_id="dup-1", user_id="new-user", item_id="i000-001")
    first = await client.recommender.Feedback(pb.FeedbackRequest(events=[event, event]))
    again = await client.recommender.Feedback(pb.FeedbackRequest(events=[event]))
    assert (first.stored, first.duplicates) == (1, 1)
    assert (again.stored, again.duplicates) == (0, 1)
    from shared.storage import event_store
    from shared.storage.engine import session_scope

    with session_scope(server.engine) as session:
        assert [i for i, _ in event_store.recent_history(session, user_id="new-user", limit=5)] == [
            "i000-001"
        ]


async def test_feedback_stream_counts_everything(client) -> None:
    async def batches():
        for b in range(3):
            yield pb.FeedbackRequest(
                events=[
                    pb.Event(event_id=f"s-{b}-{i}", user_id=f"stream-{i}", item_id="i001-002")
                    for i in range(50)
                ]
            )

    answer = await client.recommender.FeedbackStream(batches())
    assert (answer.stored, answer.duplicates) == (150, 0)


async def test_unknown_user_gets_popularity_fallback(client) -> None:
    response = await client.recommender.Recommend(pb.RecommendRequest(user_id="nobody", k=3))
    assert response.source == pb.SOURCE_POPULARITY_FALLBACK
    assert response.history_used == 0
    assert len(response.items) == 3


async def test_inline_history_exclusions_and_candidates(client) -> None:
    history = ["i002-000", "i002-001", "i002-002"]
    base = await client.recommender.Recommend(pb.RecommendRequest(history=history, k=5))
    assert base.source == pb.SOURCE_MODEL and base.history_used == 3
    top = base.items[0].item_id
    excluded = await client.recommender.Recommend(
        pb.RecommendRequest(history=history, k=5, exclude_item_ids=[top])
    )
    assert top not in [i.item_id for i in excluded.items]
    candidates = ["i000-000", "i001-005", "i002-001", "not-in-catalogue"]
    limited = await client.recommender.Recommend(
        pb.RecommendRequest(history=history, k=10, candidate_item_ids=candidates, allow_seen=True)
    )
    assert {i.item_id for i in limited.items} == {"i000-000", "i001-005", "i002-001"}
    unseen = await client.recommender.Recommend(
        pb.RecommendRequest(history=history, k=10, candidate_item_ids=candidates)
    )
    assert {i.item_id for i in unseen.items} == {"i000-000", "i001-005"}


async def test_unknown_history_items_are_skipped(client) -> None:
    response = await client.recommender.Recommend(
        pb.RecommendRequest(history=["never-seen", "i001-001"], k=3)
    )
    assert response.history_used == 1
    assert response.source == pb.SOURCE_MODEL


async def test_unavailable_items_are_never_recommended(client, server) -> None:
    from shared.storage import item_store
    from shared.storage.engine import session_scope
    from shared.storage.tables import Item

    first = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=3))
    banned = first.items[0].item_id
    with session_scope(server.engine) as session:
        item_store.upsert_items(session, items=[Item(item_id=banned, available=False)])
    await server.registry.refresh()
    second = await client.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=3))
    assert banned not in [i.item_id for i in second.items]


async def test_health_and_reflection(server) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(
            health_pb2.HealthCheckRequest(service="recserve.v1.Recommender")
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def one():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for reply in stub.ServerReflectionInfo(one()):
            names = [s.name for s in reply.list_services_response.service]
        assert {"recserve.v1.Recommender", "recserve.v1.ModelAdmin"} <= set(names)


async def test_not_serving_until_a_model_is_loaded_then_unavailable(empty_settings) -> None:
    from server.app import start_server
    from shared.client import AsyncClient

    running = await start_server(empty_settings)
    client = AsyncClient(running.target)
    try:
        health = health_pb2_grpc.HealthStub(client.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.recommender.Recommend(pb.RecommendRequest(user_id="x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # Feedback works without a model, and gives a popularity fallback.
        await client.recommender.Feedback(
            pb.FeedbackRequest(
                events=[
                    pb.Event(event_id="e1", user_id="a", item_id="popular"),
                    pb.Event(event_id="e2", user_id="b", item_id="popular"),
                ]
            )
        )
        await running.registry.refresh()
        running.registry.fallback = None
        await running.registry.refresh()
        response = await client.recommender.Recommend(pb.RecommendRequest(user_id="c", k=1))
        assert response.source == pb.SOURCE_POPULARITY_FALLBACK
        assert [i.item_id for i in response.items] == ["popular"]
    finally:
        await client.close()
        await running.stop(0)


async def test_concurrent_requests_are_batched(settings) -> None:
    from server.app import start_server
    from shared.client import AsyncClient

    # Admission by queue time off: under a loaded test machine it may (rightly) shed part
    # of a burst of 150, and this test is about batching, not shedding.
    unshed = settings.model_copy(
        update={"server": settings.server.model_copy(update={"max_queue_wait_ms": 0})}
    )
    server = await start_server(unshed)
    client = AsyncClient(server.target)
    try:
        users = [f"u{u:05d}" for u in range(TINY_SPEC.n_users)]
        for user in users:  # warm the history cache so requests reach the batcher together
            await server.history.get(user)
        responses = await asyncio.gather(
            *[client.recommender.Recommend(pb.RecommendRequest(user_id=u, k=3)) for u in users]
        )
        assert all(r.source == pb.SOURCE_MODEL for r in responses)
        stats = server.stats.snapshot()
        assert stats["mean_batch_size"] > 1.0
    finally:
        await client.close()
        await server.stop(0)


async def test_recommend_batch_answers_like_recommend_in_order(client, server) -> None:
    requests = [
        pb.RecommendRequest(user_id=USER, k=4),
        pb.RecommendRequest(user_id="nobody-at-all", k=3),
        pb.RecommendRequest(user_id="anon", history=["i001-000", "i001-001"], k=5),
        pb.RecommendRequest(user_id="u00011", k=2, exclude_item_ids=["i000-000"]),
    ]
    batches_before = server.stats.batches_total
    batch = await client.recommender.RecommendBatch(pb.RecommendBatchRequest(requests=requests))
    singles = [await client.recommender.Recommend(r) for r in requests]
    assert len(batch.responses) == len(requests)
    for got, single in zip(batch.responses, singles, strict=True):
        assert [i.item_id for i in got.items] == [i.item_id for i in single.items]
        assert [i.score for i in got.items] == pytest.approx(
            [i.score for i in single.items], rel=1e-4
        )
        assert (got.source, got.history_used) == (single.source, single.history_used)
    assert batch.responses[1].source == pb.SOURCE_POPULARITY_FALLBACK
    assert server.stats.batches_total > batches_before


async def test_returning_user_reuses_state_and_feedback_refreshes_it(client, server) -> None:
    core = server.parts
    first = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00011", k=5))
    runs = core.states.misses
    again = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00011", k=5))
    assert [i.item_id for i in again.items] == [i.item_id for i in first.items]
    assert core.states.hits >= 1 and core.states.misses == runs, "no model run the second time"
    await client.recommender.Feedback(
        pb.FeedbackRequest(
            events=[
                pb.Event(
                    event_id="st-1",
                    user_id="u00011",
                    item_id="i001-003",
                    timestamp_ms=int(time.time() * 1000),
                )
            ]
        )
    )

    async def refreshed() -> bool:  # the state is re-encoded in the background
        _, version = await core.history.get_versioned("u00011")
        return core.states.get("u00011", 1, version) is not None

    await eventually(refreshed, "the state refreshed after Feedback", timeout=5)
    after = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00011", k=5))
    assert after.history_used >= 1
    assert "i001-003" not in [i.item_id for i in after.items]


async def test_naive_and_noop_servers_answer_the_same_shapes(settings) -> None:
    from server.app import start_server
    from shared.client import AsyncClient

    for update in ({"naive": True}, {"backend": "noop"}):
        variant = settings.model_copy(update={"server": settings.server.model_copy(update=update)})
        running = await start_server(variant)
        c = AsyncClient(running.target)
        try:
            response = await c.recommender.Recommend(
                pb.RecommendRequest(history=["i001-001", "i001-002"], k=4)
            )
            assert len(response.items) == 4 and response.source == pb.SOURCE_MODEL
            stored = await c.recommender.Recommend(pb.RecommendRequest(user_id=USER, k=4))
            assert len(stored.items) == 4
        finally:
            await c.close()
            await running.stop(0)


def test_torch_backend_matches_onnxruntime_on_cpu(trained_template) -> None:
    import numpy as np

    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.backends.torch_cuda import TorchBackend
    from shared.model import bundle as bundle_format

    loaded = bundle_format.load(next((trained_template / "models").iterdir()))
    reference = OnnxRuntimeBackend(loaded.onnx_path, intra_op_threads=1)
    torch_backend = TorchBackend(loaded, device="cpu")
    history = np.random.default_rng(0).integers(1, loaded.config.num_items + 1, (5, 9))
    history[1, :4] = 0
    np.testing.assert_allclose(
        torch_backend.encode(history), reference.encode(history), rtol=1e-4, atol=1e-4
    )


async def test_concurrent_reads_of_one_uncached_history_share_one_load(settings) -> None:
    """With the history cache off (the naive mode), many concurrent requests for one user
    must neither recurse nor fail."""
    from concurrent.futures import ThreadPoolExecutor

    from server.history import HistoryCache
    from shared.storage.engine import make_engine

    engine = make_engine(settings.db_url)
    with ThreadPoolExecutor(4) as pool:
        cache = HistoryCache(engine, pool, max_bytes=0, ttl_s=0)
        reads = []
        read = cache._read
        cache._read = lambda user: reads.append(user) or read(user)  # type: ignore[method-assign]
        results = await asyncio.gather(*[cache.get_versioned(USER) for _ in range(600)])
    engine.dispose()
    assert len(reads) == 1, "concurrent callers share one database read"
    assert len({tuple(items) for items, _ in results}) == 1
    assert all(version == 0 for _, version in results), "uncached histories carry version 0"
    assert len(results[0][0]) > 10


async def test_explanations_are_the_models_own_leave_one_out(client) -> None:
    history = ["i002-000", "i001-003", "i002-001", "i000-004", "i002-002", "i001-001"]
    plain = await client.recommender.Recommend(pb.RecommendRequest(history=history, k=3))
    assert all(not item.explanations for item in plain.items), "off by default"
    explained = await client.recommender.Recommend(
        pb.RecommendRequest(history=history, k=3, explain=True)
    )
    assert [i.item_id for i in explained.items] == [i.item_id for i in plain.items]
    for item in explained.items:
        support = list(item.explanations)
        assert 1 <= len(support) <= 3
        assert [e.weight for e in support] == sorted((e.weight for e in support), reverse=True)
        assert all(e.weight > 0 and e.item_id == history[-e.events_ago] for e in support)

        async def score_without(position: int, item_id: str = item.item_id) -> float:
            rest = history[:position] + history[position + 1 :]
            answer = await client.recommender.Recommend(
                pb.RecommendRequest(history=rest, candidate_item_ids=[item_id], allow_seen=True)
            )
            return answer.items[0].score

        # The weight is the score the item loses when the model reads the history
        # without that event, and the top event costs it more than any other.
        drops = [item.score - await score_without(j) for j in range(len(history))]
        top = support[0]
        assert drops[len(history) - top.events_ago] == pytest.approx(top.weight, abs=1e-3)
        assert max(drops) == pytest.approx(top.weight, abs=1e-3)


async def test_explanations_for_a_stored_user_and_in_batches(client) -> None:
    single = await client.recommender.Recommend(
        pb.RecommendRequest(user_id=USER, k=4, explain=True)
    )
    assert single.source == pb.SOURCE_MODEL and any(i.explanations for i in single.items)
    batch = await client.recommender.RecommendBatch(
        pb.RecommendBatchRequest(
            requests=[
                pb.RecommendRequest(user_id=USER, k=4, explain=True),
                pb.RecommendRequest(user_id=USER, k=4),
                pb.RecommendRequest(user_id="nobody-at-all", k=4, explain=True),
            ]
        )
    )
    first, unexplained, fallback = batch.responses
    assert [list(i.explanations) for i in first.items] == [
        list(i.explanations) for i in single.items
    ]
    assert not any(i.explanations for i in unexplained.items)
    assert fallback.source == pb.SOURCE_POPULARITY_FALLBACK
    assert not any(i.explanations for i in fallback.items)


async def test_only_the_newest_events_explain(data_dir) -> None:
    from server.app import start_server
    from shared.client import AsyncClient
    from tests.conftest import make_settings

    running = await start_server(make_settings(data_dir, explain_events=2))
    client = AsyncClient(running.target)
    try:
        history = ["i002-000", "i001-003", "i002-001", "i000-004", "i002-002", "i001-001"]
        answer = await client.recommender.Recommend(
            pb.RecommendRequest(history=history, k=5, explain=True)
        )
        ages = {e.events_ago for item in answer.items for e in item.explanations}
        assert ages and ages <= {1, 2}
    finally:
        await client.close()
        await running.stop(0)


async def test_a_history_read_again_unchanged_costs_no_model_run(client, server) -> None:
    """A cached history that expires (the TTL safety net) or is invalidated is read from
    the database again; when it holds the same events, the user's encoded state stands."""
    request = pb.RecommendRequest(user_id="u00003", k=5)
    first = await client.recommender.Recommend(request)
    runs = server.stats.batched_histories_total
    server.history.invalidate(["u00003"])  # what an expiry does to the entry
    again = await client.recommender.Recommend(request)
    assert server.stats.batched_histories_total == runs, "no model run"
    assert [i.item_id for i in again.items] == [i.item_id for i in first.items]
    await client.recommender.Feedback(
        pb.FeedbackRequest(
            events=[pb.Event(event_id="again-1", user_id="u00003", item_id=first.items[0].item_id)]
        )
    )
    server.history.invalidate(["u00003"])
    await client.recommender.Recommend(request)
    assert server.stats.batched_histories_total > runs, "a changed history is encoded again"


async def test_similar_items_over_the_wire(client, server) -> None:
    query = "i003-002"
    response = await client.recommender.SimilarItems(
        pb.SimilarItemsRequest(item_ids=[query, "no-such-item"], k=5, include_titles=True)
    )
    ids = [item.item_id for item in response.items]
    assert response.model_version == 1 and len(ids) == 5 and query not in ids
    assert list(response.unknown_item_ids) == ["no-such-item"]
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    # The synthetic log walks each topic's series in order: its neighbours share the topic.
    assert sum(item.startswith("i003-") for item in ids) >= 3, ids
    history = await server.history.get(USER)
    mine = await client.recommender.SimilarItems(
        pb.SimilarItemsRequest(item_ids=[history[-1]], user_id=USER, k=20)
    )
    assert mine.items and not {i.item_id for i in mine.items} & set(history), "seen left out"
    for request, code, field in [
        (pb.SimilarItemsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "item_ids"),
        (pb.SimilarItemsRequest(item_ids=["x"], k=-2), grpc.StatusCode.INVALID_ARGUMENT, "k"),
        (pb.SimilarItemsRequest(item_ids=["nothing"]), grpc.StatusCode.NOT_FOUND, "item_ids"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.recommender.SimilarItems(request)
        assert caught.value.code() == code and field in caught.value.details()


async def test_a_disliked_item_is_never_recommended_again(client) -> None:
    user = "u00021"
    request = pb.RecommendRequest(user_id=user, k=10, allow_seen=True)
    top = (await client.recommender.Recommend(request)).items[0].item_id
    dislike = pb.Event(event_id="dislike-1", user_id=user, item_id=top, kind="dislike")
    assert (await client.recommender.Feedback(pb.FeedbackRequest(events=[dislike]))).stored == 1
    after = await client.recommender.Recommend(request)
    assert after.items and top not in [item.item_id for item in after.items]
    similar = await client.recommender.SimilarItems(
        pb.SimilarItemsRequest(item_ids=[after.items[0].item_id], user_id=user, k=30)
    )
    assert top not in [item.item_id for item in similar.items]
