"""Attack rows under load: idle streams, label and explanation floods, the history
budget, and plain traffic beside the attacks (bench/security.py runs them)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import ServerProcess, rss_mb
from bench.security_lab import (
    PRODUCTION,
    READ,
    WRITE,
    Lab,
    bearer,
    code_of,
    outcome,
    own_channel,
    silence,
    until_done,
)
from shared.proto.recserve.v1 import admin_pb2, admin_pb2_grpc, recommender_pb2_grpc
from shared.proto.recserve.v1 import recommender_pb2 as pb


async def _hold_idle_calls(stop: asyncio.Event, channels: list[Any]) -> list[Any]:
    """100 idle FeedbackStreams with a valid write token over two connections, and 20
    unary Recommend calls whose body never comes."""
    held = []
    for n in range(100):
        stub = recommender_pb2_grpc.RecommenderStub(channels[n % 2])
        held.append(stub.FeedbackStream(silence(stop), metadata=bearer(WRITE)))
    for n in range(20):
        bodiless = channels[n % 2].stream_unary(
            "/recserve.v1.Recommender/Recommend",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.RecommendResponse.FromString,
        )
        held.append(bodiless(silence(stop), metadata=bearer(READ)))
    return held


def idle_streams(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """The idle calls of _hold_idle_calls; then a Recommend with a valid read token."""
    target = lab.guarded.target

    async def attempt() -> dict[str, Any]:
        stop = asyncio.Event()
        channels = [own_channel(target) for _ in range(3)]
        held: list[Any] = []
        try:
            held = await _hold_idle_calls(stop, channels)
            tasks = [asyncio.ensure_future(call) for call in held]
            expected_refused = 100 - PRODUCTION.max_streams_per_caller
            await until_done(tasks, expected_refused, timeout=10)
            refused = [code_of(t.exception()) for t in tasks if t.done()]
            recommender = recommender_pb2_grpc.RecommenderStub(channels[2])
            started = time.perf_counter()
            code = await outcome(
                recommender.Recommend(
                    pb.RecommendRequest(user_id=lab.users[0], k=5),
                    metadata=bearer(READ),
                    timeout=1.0,
                )
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            health = health_pb2_grpc.HealthStub(channels[2])
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            return {
                "recommend": code,
                "recommend_ms": elapsed_ms,
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
                "streams_refused": refused.count("RESOURCE_EXHAUSTED"),
                "still_held": sum(not t.done() for t in tasks),
            }
        finally:
            stop.set()
            for call in held:
                call.cancel()
            for channel in channels:
                await channel.close()

    figures = asyncio.run(attempt())
    passed = (
        figures["recommend"] == "OK"
        and figures["recommend_ms"] < 1000
        and figures["health"] == "SERVING"
    )
    observed = (
        f"Recommend {figures['recommend']} in {figures['recommend_ms']:.0f} ms; "
        f"{figures['streams_refused']} streams over the caller cap refused; health "
        f"{figures['health']}"
    )
    return observed, passed, figures


def idle_stream_timeout(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    async def attempt() -> tuple[str, float]:
        stop = asyncio.Event()
        async with own_channel(lab.guarded.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            started = time.perf_counter()
            code = await outcome(stub.FeedbackStream(silence(stop), metadata=bearer(WRITE)))
            stop.set()
            return code, time.perf_counter() - started

    code, seconds = asyncio.run(attempt())
    limit = PRODUCTION.stream_idle_timeout_s
    passed = code == "DEADLINE_EXCEEDED" and limit <= seconds < limit + 2
    return f"{code} after {seconds:.1f} s", passed, {"code": code, "seconds": seconds}


def server_stats(target: str) -> admin_pb2.ServerStats:
    with grpc.insecure_channel(target) as channel:
        return admin_pb2_grpc.ModelAdminStub(channel).GetServerStats(
            admin_pb2.GetServerStatsRequest(), timeout=10
        )


async def label_attack(target: str, requests: int, users: list[str]) -> dict[str, int]:
    """``requests`` Recommends, each with a label no other request sent."""
    codes: dict[str, int] = {}
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for start in range(0, requests, 16):
            calls = [
                stub.Recommend(
                    pb.RecommendRequest(
                        user_id=users[n % len(users)], k=10, include_labels=[f"attack-{n:06d}"]
                    ),
                    timeout=10,
                )
                for n in range(start, min(requests, start + 16))
            ]
            for code in await asyncio.gather(*map(outcome, calls)):
                codes[code] = codes.get(code, 0) + 1
    return codes


async def explained_attack(
    target: str, batches: int, per_batch: int, users: list[str]
) -> dict[str, int]:
    codes: dict[str, int] = {}
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for b in range(batches):
            requests = [
                pb.RecommendRequest(user_id=users[(b * per_batch + n) % len(users)], explain=True)
                for n in range(per_batch)
            ]
            code = await outcome(
                stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
            )
            codes[code] = codes.get(code, 0) + 1
    return codes


async def warm(target: str, users: list[str]) -> None:
    """Every stored user asked once, and one explained batch: the footprint a server
    serving these users has anyway (histories, states, the model's run memory)."""
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for start in range(0, len(users), 16):
            calls = [
                stub.Recommend(pb.RecommendRequest(user_id=u, k=10), timeout=30)
                for u in users[start : start + 16]
            ]
            await asyncio.gather(*map(outcome, calls))
    await explained_attack(target, 2, PRODUCTION.max_explained_per_call, users)


ATTACK_GROWTH_MB = 64.0
"""The most RSS the label and explanation attacks may add to a warm server: 10,000
label entries (each at most the label's rows) and the explanation runs' buffers."""


def memory_under_attack(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    server = lab.open
    asyncio.run(warm(server.target, lab.users))
    before = rss_mb(server.proc.pid)
    labels = asyncio.run(label_attack(server.target, 12_000, lab.users))
    explained = asyncio.run(
        explained_attack(server.target, 20, PRODUCTION.max_explained_per_call, lab.users)
    )
    over = asyncio.run(
        explained_attack(server.target, 1, PRODUCTION.max_explained_per_call + 1, lab.users)
    )
    after = rss_mb(server.proc.pid)
    stats = server_stats(server.target)
    figures = {
        "rss_before_mb": before,
        "rss_after_mb": after,
        "label_cache_entries": stats.label_cache_entries,
        "history_cache_bytes": stats.history_cache_bytes,
        "label_requests": labels,
        "explained_batches": explained,
        "over_the_cap": over,
    }
    passed = (
        stats.label_cache_entries <= PRODUCTION.label_cache_max_entries
        and stats.history_cache_bytes <= PRODUCTION.history_cache_max_bytes
        and after - before <= ATTACK_GROWTH_MB
        and set(labels) <= {"OK", "RESOURCE_EXHAUSTED"}
        and set(explained) <= {"OK", "RESOURCE_EXHAUSTED"}
        and over == {"INVALID_ARGUMENT": 1}
    )
    observed = (
        f"RSS of a warm server {before:.0f} -> {after:.0f} MB; "
        f"{stats.label_cache_entries:,} label entries "
        f"after 12,000 labels; 20 explained batches {explained}; 33 explained {over}"
    )
    return observed, passed, figures


def p99_under_attack(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Closed-loop plain traffic, alone and beside the label and explanation attacks,
    interleaved, three rounds; the median of the p99 ratios."""
    from bench.loadgen import LoadSpec, run_load, summarize

    server = lab.open
    items = [str(i) for i in range(1, 3000)]

    def plain(duration: float) -> dict[str, Any]:
        spec = LoadSpec(
            target=server.target,
            traffic="mixed",
            loop="closed",
            concurrency=4,
            duration_s=duration,
            items=tuple(items),
            users=tuple(lab.users),
            feedback_share=0.0,
        )
        return summarize(run_load([spec]))

    def attacked(duration: float) -> dict[str, Any]:
        async def attack(stop_at: float) -> None:
            n = 0
            while time.monotonic() < stop_at:
                await label_attack(server.target, 64, lab.users[n % 50 :])
                await explained_attack(
                    server.target, 1, PRODUCTION.max_explained_per_call, lab.users
                )
                n += 1

        import threading

        stop_at = time.monotonic() + duration + 1.0
        thread = threading.Thread(target=lambda: asyncio.run(attack(stop_at)), daemon=True)
        thread.start()
        result = plain(duration)
        thread.join()
        return result

    rounds = []
    for _ in range(3):
        base = plain(6.0)
        under = attacked(6.0)
        rounds.append(
            {
                "baseline_p99_ms": base["p99_ok_ms"],
                "attack_p99_ms": under["p99_ok_ms"],
                "ratio": under["p99_ok_ms"] / max(base["p99_ok_ms"], 1e-9),
                "attack_errors": under["errors"],
            }
        )
    ratio = statistics.median(r["ratio"] for r in rounds)
    observed = (
        "p99 ratios " + ", ".join(f"{r['ratio']:.2f}" for r in rounds) + f" (median {ratio:.2f})"
    )
    return observed, ratio <= 2.0, {"rounds": rounds, "median_ratio": ratio}


def history_budget(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """A server with a 4 MiB history budget, asked for every stored user."""
    budget = 4 * 2**20
    server = ServerProcess(lab.settings, "small-history", {"history_cache_max_bytes": str(budget)})
    try:

        async def ask() -> None:
            async with own_channel(server.target) as channel:
                stub = recommender_pb2_grpc.RecommenderStub(channel)
                for start in range(0, len(lab.users), 16):
                    calls = [
                        stub.Recommend(pb.RecommendRequest(user_id=u, k=1), timeout=30)
                        for u in lab.users[start : start + 16]
                    ]
                    await asyncio.gather(*map(outcome, calls))

        asyncio.run(ask())
        stats = server_stats(server.target)
    finally:
        server.stop()
    passed = 0 < stats.history_cache_bytes <= budget and stats.cached_users < len(lab.users)
    observed = (
        f"{stats.history_cache_bytes / 2**20:.2f} MiB for {stats.cached_users} of "
        f"{len(lab.users)} users (budget 4 MiB)"
    )
    return observed, passed, {"bytes": stats.history_cache_bytes, "users": stats.cached_users}
