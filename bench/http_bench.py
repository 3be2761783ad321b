"""`recserve bench http`: the HTTP/JSON door's throughput against gRPC's, on one server.

One `recserve serve` process with the HTTP door on, the ML-1M-sized model (random weights
unless --bundle names a trained one) and stored histories. Closed-loop Recommend (k=10,
returning users) at HTTP_LEVEL callers in two client processes, the same client code for
both doors (asyncio: grpc.aio, or aiohttp with kept-alive connections), interleaved for
--rounds rounds (default 3): the medians of throughput, p50 and p99, and their ratios,
as a table and JSON.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.interleaved import report
from bench.processes import ServerProcess, free_port
from bench.serve_measure import warm_histories
from bench.serve_stage import prepare

HTTP_LEVEL = 8
CLIENTS = 2


@dataclass(frozen=True)
class Spec:
    transport: str  # "grpc" | "http"
    target: str
    concurrency: int
    duration_s: float
    users: tuple[str, ...]
    seed: int
    warmup_s: float = 1.0


async def _caller(spec: Spec) -> tuple[Any, Any]:
    """(call(user) coroutine function, close coroutine function) for the transport."""
    if spec.transport == "grpc":
        import grpc

        from shared.proto.recserve.v1 import recommender_pb2 as pb
        from shared.proto.recserve.v1 import recommender_pb2_grpc

        channel = grpc.aio.insecure_channel(spec.target)
        stub = recommender_pb2_grpc.RecommenderStub(channel)

        async def call_grpc(user: str) -> None:
            await stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)

        return call_grpc, channel.close
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=spec.concurrency),
        timeout=aiohttp.ClientTimeout(total=10),
    )
    url = f"http://{spec.target}/v1/recommend"

    async def call_http(user: str) -> None:
        async with session.post(url, json={"userId": user, "k": 10}) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

    return call_http, session.close


async def _run(spec: Spec) -> dict[str, Any]:
    call, close = await _caller(spec)
    rng = random.Random(spec.seed)
    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    measure_from, end = start + spec.warmup_s, start + spec.warmup_s + spec.duration_s

    async def worker() -> None:
        nonlocal errors
        while (now := time.monotonic()) < end:
            began = now
            try:
                await call(rng.choice(spec.users))
            except Exception:
                errors += 1
                continue
            if began >= measure_from:
                latencies.append(time.monotonic() - began)

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    await close()
    return {"latencies": latencies, "errors": errors}


def _process_main(spec: Spec, queue: Any) -> None:
    queue.put(asyncio.run(_run(spec)))


def load(transport: str, target: str, users: list[str], duration: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    specs = [
        Spec(transport, target, HTTP_LEVEL // CLIENTS, duration, tuple(users), seed=n)
        for n in range(CLIENTS)
    ]
    procs = [ctx.Process(target=_process_main, args=(spec, queue)) for spec in specs]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    latencies = np.asarray([x for r in results for x in r["latencies"]]) * 1000.0
    return {
        "throughput": len(latencies) / duration,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else 0.0,
        "errors": sum(r["errors"] for r in results),
    }


def run_http_bench(
    data_dir: Path, bundle: Path | None, *, rounds: int, duration: float, output: Path
) -> dict[str, Any]:
    settings, _, users = prepare(data_dir, bundle)
    http_port = free_port()
    server = ServerProcess(
        settings, "recserve", {"http_enabled": "true", "http_port": str(http_port)}
    )
    targets = {"grpc": server.target, "http": f"127.0.0.1:{http_port}"}
    rows: dict[str, list[dict[str, Any]]] = {"grpc": [], "http": []}
    try:
        warm_histories(server, users)
        for _ in range(rounds):
            for transport, found in rows.items():
                row = load(transport, targets[transport], users, duration)
                found.append(row)
                print(
                    f"{transport:>5}: {row['throughput']:8.1f} req/s  p50 {row['p50_ms']:6.2f} ms"
                    f"  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}",
                    flush=True,
                )
    finally:
        server.stop()
    errors = sum(r["errors"] for found in rows.values() for r in found)
    return report(
        rows, baseline="grpc", candidate="http", title="HTTP/JSON / gRPC", level=HTTP_LEVEL,
        duration=duration, output=output, errors=errors,
    )  # fmt: skip
