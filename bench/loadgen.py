"""Load-generator client processes for `recserve bench serve`.

Each process runs its own grpc.aio channel and event loop, so clients do not share a GIL
with the server or with each other. Two loops:
- closed: ``concurrency`` callers, each sending its next request when the last answered;
- open: requests sent at a fixed rate whatever the answers; latency is measured from the
  scheduled send time, so a stalled server is not hidden (no coordinated omission).
Two traffic shapes:
- cold: every request carries an inline history of ``history_len`` random items;
- mixed: returning users (stored histories); before about ``feedback_share`` of the
  requests the caller sends a Feedback event for that user first;
- similar: SimilarItems for one random catalogue item (no user).
With ``bulk`` > 0, each call is one RecommendBatch of ``bulk`` cold requests, and
throughput counts users (requests inside the batches), not calls.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.proto.recserve.v1 import recommender_pb2_grpc


@dataclass(frozen=True)
class LoadSpec:
    target: str
    traffic: str  # "cold" | "mixed" | "similar"
    loop: str  # "closed" | "open"
    concurrency: int = 1  # closed loop: callers in this process
    rate: float = 0.0  # open loop: requests per second from this process
    duration_s: float = 4.0
    warmup_s: float = 1.0
    items: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    history_len: int = 200
    feedback_share: float = 0.2
    k: int = 10
    seed: int = 0
    bulk: int = 0  # > 0: RecommendBatch calls of this many cold requests
    explain: bool = False  # Recommend with explanations


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    ok_latencies_ms: list[float] = field(default_factory=list)
    """Latencies of the calls that succeeded (the accepted ones, under load shedding)."""
    codes: Counter[str] = field(default_factory=Counter)
    feedback_calls: int = 0
    elapsed_s: float = 0.0
    users_per_call: int = 1
    feedback_latencies_ms: list[float] = field(default_factory=list)
    """Feedback calls (mixed traffic) from their own send time; the Recommend that
    follows is measured from the pair's scheduled time, so it includes them."""
    details: Counter[str] = field(default_factory=Counter)
    """Failed calls by code and the start of the server's message: which limit shed them."""

    def add(self, other: LoadResult) -> None:
        """Adds ``other``'s calls: what ran at the same time (elapsed: the longer), or
        one after the other (the caller adds the elapsed times)."""
        self.latencies_ms.extend(other.latencies_ms)
        self.ok_latencies_ms.extend(other.ok_latencies_ms)
        self.feedback_latencies_ms.extend(other.feedback_latencies_ms)
        self.codes.update(other.codes)
        self.details.update(other.details)
        self.feedback_calls += other.feedback_calls
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)


def _cold(spec: LoadSpec, rng: np.random.Generator) -> pb.RecommendRequest:
    picks = rng.integers(0, len(spec.items), size=spec.history_len)
    history = [spec.items[i] for i in picks]
    return pb.RecommendRequest(user_id="anonymous", history=history, k=spec.k, explain=spec.explain)


POOL = 512
"""Distinct cold requests per client process, serialised before the clock starts: the
load generator shares the machine with the server, so it must cost as little CPU per
call as it can."""


@dataclass
class Payloads:
    cold: list[bytes]
    users: dict[str, bytes]


def _payloads(spec: LoadSpec, rng: np.random.Generator) -> Payloads:
    if spec.traffic == "cold":
        return Payloads([_cold(spec, rng).SerializeToString() for _ in range(POOL)], {})
    if spec.traffic == "similar":
        picks = rng.integers(0, len(spec.items), size=POOL)
        return Payloads(
            [
                pb.SimilarItemsRequest(item_ids=[spec.items[i]], k=spec.k).SerializeToString()
                for i in picks
            ],
            {},
        )
    return Payloads(
        [],
        {
            u: pb.RecommendRequest(user_id=u, k=spec.k, explain=spec.explain).SerializeToString()
            for u in spec.users
        },
    )


def _request(
    spec: LoadSpec, rng: np.random.Generator, payloads: Payloads
) -> tuple[bytes, str | None]:
    if spec.traffic in ("cold", "similar"):
        return payloads.cold[int(rng.integers(0, len(payloads.cold)))], None
    user = spec.users[int(rng.integers(0, len(spec.users)))]
    return payloads.users[user], user


async def _one(
    stub: recommender_pb2_grpc.RecommenderStub,
    recommend: Any,
    payloads: Payloads,
    spec: LoadSpec,
    rng: np.random.Generator,
    result: LoadResult,
    record: bool,
    counter: list[int],
    scheduled: float | None = None,
) -> None:
    import grpc

    if spec.bulk:
        batch = pb.RecommendBatchRequest(requests=[_cold(spec, rng) for _ in range(spec.bulk)])
        await _measured(stub.RecommendBatch(batch, timeout=5), result, record, scheduled)
        return
    request, user = _request(spec, rng, payloads)
    if user is not None and rng.random() < spec.feedback_share:
        counter[0] += 1
        event = pb.Event(
            event_id=f"bench-{spec.seed}-{counter[0]}-{time.time_ns()}",
            user_id=user,
            item_id=spec.items[int(rng.integers(0, len(spec.items)))],
            kind="click",
        )
        sent = time.perf_counter()
        try:
            await stub.Feedback(pb.FeedbackRequest(events=[event]), timeout=5)
            if record:
                result.feedback_calls += 1
                result.feedback_latencies_ms.append((time.perf_counter() - sent) * 1000.0)
        except grpc.aio.AioRpcError as exc:
            if record:
                result.codes[f"feedback:{exc.code().name}"] += 1
    await _measured(recommend(request, timeout=5), result, record, scheduled)


async def _measured(
    call: Awaitable[Any], result: LoadResult, record: bool, scheduled: float | None
) -> None:
    """Awaits one measured call; records its latency (from the scheduled send time in the
    open loop) and its status code."""
    import grpc

    started = scheduled if scheduled is not None else time.perf_counter()
    code = "OK"
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        if record:
            # Numbers masked: one line per kind of refusal, not per queue length.
            result.details[f"{code}: {re.sub(r'[0-9]+', '#', exc.details() or '')[:64]}"] += 1
    if record:
        latency = (time.perf_counter() - started) * 1000.0
        result.latencies_ms.append(latency)
        if code == "OK":
            result.ok_latencies_ms.append(latency)
        result.codes[code] += 1


async def _run(spec: LoadSpec) -> LoadResult:
    import grpc

    rng = np.random.default_rng(spec.seed)
    result = LoadResult(users_per_call=max(1, spec.bulk))
    counter = [0]
    payloads = _payloads(spec, rng)
    async with grpc.aio.insecure_channel(spec.target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        # Pre-serialised requests out, raw bytes back: only the status is looked at.
        method = "SimilarItems" if spec.traffic == "similar" else "Recommend"
        recommend = channel.unary_unary(
            f"/recserve.v1.Recommender/{method}",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        start = time.perf_counter()
        measure_from = start + spec.warmup_s
        end = measure_from + spec.duration_s
        if spec.loop == "closed":

            async def caller() -> None:
                while (now := time.perf_counter()) < end:
                    await _one(
                        stub, recommend, payloads, spec, rng, result, now >= measure_from, counter
                    )

            await asyncio.gather(*[caller() for _ in range(spec.concurrency)])
        else:
            interval = 1.0 / spec.rate
            pending: set[asyncio.Task[None]] = set()
            next_at = start
            while next_at < end:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(
                    _one(
                        stub,
                        recommend,
                        payloads,
                        spec,
                        rng,
                        result,
                        next_at >= measure_from,
                        counter,
                        next_at,
                    )
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += interval
            if pending:
                await asyncio.gather(*pending)
        result.elapsed_s = spec.duration_s
    return result


def _process_main(spec: LoadSpec, queue: Any) -> None:
    queue.put(asyncio.run(_run(spec)))


def run_load(specs: list[LoadSpec]) -> LoadResult:
    """Runs one client process per spec at the same time; merges their results."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(spec, queue)) for spec in specs]
    for proc in procs:
        proc.start()
    results = [
        queue.get(timeout=max(s.duration_s + s.warmup_s for s in specs) + 120) for _ in procs
    ]
    for proc in procs:
        proc.join(timeout=30)
    merged = LoadResult(users_per_call=results[0].users_per_call)
    for r in results:
        merged.add(r)
    return merged


def summarize(result: LoadResult) -> dict[str, Any]:
    lat = np.asarray(result.latencies_ms) if result.latencies_ms else np.zeros(1)
    accepted = np.asarray(result.ok_latencies_ms) if result.ok_latencies_ms else np.zeros(1)
    ok = result.codes.get("OK", 0)
    requests = int(sum(v for k, v in result.codes.items() if not k.startswith("feedback")))
    return {
        # Recommendations per second: calls x users per call.
        "throughput": ok * result.users_per_call / result.elapsed_s if result.elapsed_s else 0.0,
        "calls_per_s": ok / result.elapsed_s if result.elapsed_s else 0.0,
        "requests": requests,
        "shed": result.codes.get("RESOURCE_EXHAUSTED", 0) / requests if requests else 0.0,
        "p50_ok_ms": float(np.percentile(accepted, 50)),
        "p99_ok_ms": float(np.percentile(accepted, 99)),
        "feedback_calls": result.feedback_calls,
        "feedback_p99_ms": float(np.percentile(result.feedback_latencies_ms, 99))
        if result.feedback_latencies_ms
        else 0.0,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "errors": {k: v for k, v in result.codes.items() if k != "OK"},
    }
