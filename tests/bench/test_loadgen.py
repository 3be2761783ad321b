"""The serving load generator against an in-process server (both traffic shapes, both loops)."""

from __future__ import annotations

from bench.loadgen import LoadSpec, _run, summarize
from tests.conftest import TINY_SPEC

ITEMS = tuple(
    f"i{t:03d}-{p:03d}" for t in range(TINY_SPEC.n_topics) for p in range(TINY_SPEC.items_per_topic)
)
USERS = tuple(f"u{u:05d}" for u in range(20))


async def test_closed_and_open_loops(server) -> None:
    for traffic in ("cold", "mixed", "similar"):
        for loop, extra in (("closed", {"concurrency": 3}), ("open", {"rate": 100.0})):
            spec = LoadSpec(
                target=server.target,
                traffic=traffic,
                loop=loop,
                duration_s=1.5,  # a busy 2-core host can stall a server for half a second
                warmup_s=0.3,
                items=ITEMS,
                users=USERS,
                history_len=12,
                feedback_share=0.5,
                **extra,
            )
            result = await _run(spec)
            summary = summarize(result)
            assert summary["requests"] > 5, (traffic, loop)
            assert summary["errors"] == {}, summary["errors"]
            assert summary["p99_ms"] >= summary["p50_ms"] > 0
            if traffic == "mixed":
                assert summary["feedback_calls"] > 0
    assert server.stats.feedback_total > 0


async def test_bulk_calls_count_every_user(server) -> None:
    spec = LoadSpec(
        target=server.target,
        traffic="cold",
        loop="closed",
        concurrency=2,
        duration_s=2.0,  # a first RecommendBatch may take most of a second on a busy host
        warmup_s=0.5,
        items=ITEMS,
        users=USERS,
        history_len=12,
        bulk=8,
    )
    summary = summarize(await _run(spec))
    assert summary["errors"] == {}, summary["errors"]
    assert summary["requests"] > 2
    assert summary["throughput"] == summary["calls_per_s"] * 8 > 0


async def test_explained_calls(server) -> None:
    spec = LoadSpec(
        target=server.target,
        traffic="mixed",
        loop="closed",
        concurrency=2,
        duration_s=1.5,
        warmup_s=0.3,
        items=ITEMS,
        users=USERS,
        explain=True,
    )
    summary = summarize(await _run(spec))
    assert summary["errors"] == {}, summary["errors"]
    assert summary["requests"] > 2
