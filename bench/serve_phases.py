"""The serving benchmark's phases beyond the sweeps: the model ceiling in-process, hot
swaps under load, bulk RecommendBatch, explanations, and the open-loop overload summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.processes import ServerProcess, rss_mb
from bench.serve_measure import (
    measure,
    row_text,
)
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.storage import model_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import ModelStatus, ModelVersion


def twin_versions(settings: Settings) -> tuple[int, int]:
    """The active version, and a second registered version with a copy of its bundle."""
    import shutil

    engine = engine_for(settings)
    with session_scope(engine) as session:
        active = model_store.get_active_model(session)
        assert active is not None
        first = int(active.version or 0)
        twin_path = Path(active.artifact_path).with_name("bench-swap-twin")
        if not twin_path.exists():
            shutil.copytree(active.artifact_path, twin_path)
        twin = model_store.create_model_version(
            session,
            model=ModelVersion(
                status=ModelStatus.READY,
                artifact_path=str(twin_path),
                checksum=active.checksum,
                config=active.config,
            ),
        )
        second = int(twin.version or 0)
    engine.dispose()
    return first, second


def alternate(
    server: ServerProcess, versions: tuple[int, int], swaps: int, every: float
) -> list[float]:
    """Activates the two versions in turn, ``swaps`` times, ``every`` seconds apart (at
    least 50 ms); returns the server's RSS after each swap."""
    from shared.client import Client
    from shared.proto.recserve.v1 import admin_pb2

    rss_trace: list[float] = []
    client = Client(server.target)
    try:
        for i in range(swaps):
            request = admin_pb2.ActivateModelRequest(version=versions[i % 2])
            client.admin.ActivateModel(request, timeout=60)
            time.sleep(max(0.05, every))  # the load runs on between swaps
            rss_trace.append(rss_mb(server.proc.pid))
    finally:
        client.close()
    return rss_trace


def swap_phase(
    server: ServerProcess,
    settings: Settings,
    items: list[str],
    users: list[str],
    *,
    concurrency: int,
    clients: int,
    duration: float,
    swaps: int = 20,
) -> dict[str, Any]:
    """Activates two versions alternately, ``swaps`` times, under closed-loop cold load;
    compares p99 with a steady run at the same load and the server's memory before/after."""
    from concurrent.futures import ThreadPoolExecutor

    first, second = twin_versions(settings)
    steady = measure(
        server, "cold", items, users, concurrency=concurrency, clients=clients, duration=duration
    )
    rss_before = rss_mb(server.proc.pid)
    with ThreadPoolExecutor(1) as pool:
        loaded = pool.submit(
            measure, server, "cold", items, users,
            concurrency=concurrency, clients=clients, duration=duration * 2,
        )  # fmt: skip
        time.sleep(1.5)  # past the load generator's warm-up
        rss_trace = alternate(server, (second, first), swaps, every=duration * 1.6 / swaps)
        swapping = loaded.result()
    rss_after = rss_mb(server.proc.pid)
    return {
        "swaps": swaps,
        "concurrency": concurrency,
        "steady_p99_ms": steady["p99_ms"],
        "swapping_p99_ms": swapping["p99_ms"],
        "p99_ratio": swapping["p99_ms"] / steady["p99_ms"] if steady["p99_ms"] else 0.0,
        "errors_during_swaps": swapping["errors"],
        "requests_during_swaps": swapping["requests"],
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "rss_mb_after_each_swap": rss_trace,
        # Growth: the second ten swaps against the first ten (allocator arenas warm up in
        # the first few, so before/after alone overstates it).
        "rss_mb_max_first_half": max(rss_trace[: swaps // 2]),
        "rss_mb_max_second_half": max(rss_trace[swaps // 2 :]),
    }


BULK_SIZE = 32


BULK_P99_LIMIT_MS = 200.0


def bulk_phase(
    server: ServerProcess, items: list[str], users: list[str], clients: int, duration: float
) -> dict[str, Any]:
    """RecommendBatch calls of BULK_SIZE cold requests, closed loop: recommendations per
    second with the call's p99 <= BULK_P99_LIMIT_MS, to compare with single Recommends."""
    rows = []
    best = 0.0
    for level in (1, 2, 4, 8):
        row = measure(
            server,
            "cold",
            items,
            users,
            concurrency=level,
            clients=clients,
            duration=duration,
            bulk=BULK_SIZE,
        )
        row["server"] = f"{server.name}-bulk"
        rows.append(row)
        print(row_text(row), flush=True)
        if row["p99_ms"] <= BULK_P99_LIMIT_MS and not row["errors"]:
            best = max(best, row["throughput"])
    return {
        "users_per_call": BULK_SIZE,
        "call_p99_limit_ms": BULK_P99_LIMIT_MS,
        "best_users_per_s": best,
        "rows": rows,
    }


def _encode_until(
    backend: Any, history: np.ndarray, stop: float, done: list[int], slot: int
) -> None:
    while time.perf_counter() < stop:
        backend.encode(history)
        done[slot] += len(history)


def model_ceiling(bundle_path: Path, threads: int, streams: int) -> dict[str, Any]:
    """The backend alone, in-process, as the server runs it (``streams`` concurrent runs
    of ``threads`` intra-op threads each): histories of max_len per second at each batch
    size, and the latency of one batch-1 run on an idle backend."""
    import threading

    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.memory import tune_allocator

    tune_allocator()  # the server's heap settings, so the backend runs as it does there
    loaded = bundle_format.load(bundle_path)
    backend = OnnxRuntimeBackend(loaded.onnx_path, intra_op_threads=threads)
    rng = np.random.default_rng(0)
    length = loaded.config.max_len
    one = rng.integers(1, loaded.config.num_items + 1, size=(1, length))
    backend.encode(one)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        backend.encode(one)
        runs += 1
    latency_ms = (time.perf_counter() - started) / runs * 1000.0
    by_batch: dict[int, float] = {}
    for batch in (1, 4, 8, 16, 32, 64, 128):
        history = rng.integers(1, loaded.config.num_items + 1, size=(batch, length))
        backend.encode(history)
        done = [0] * streams
        stop = time.perf_counter() + 1.5
        workers = [
            threading.Thread(target=_encode_until, args=(backend, history, stop, done, i))
            for i in range(streams)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        by_batch[batch] = sum(done) / (time.perf_counter() - started)
    return {
        "seq_per_s_by_batch": by_batch,
        "best_seq_per_s": max(by_batch.values()),
        "batch1_latency_ms": latency_ms,
        "intra_op_threads": threads,
        "concurrent_runs": streams,
    }


def overload_summary(open_loop: dict[float, list[dict[str, Any]]]) -> dict[str, Any]:
    """The sustainable open-loop rate (0.8 of the best closed-loop) beside twice it, in
    rounds run one after the other: each round's ratio (accepted p99 at 2x over p99 at the
    sustainable rate, minutes apart at most), and the median round by that ratio."""
    if 0.8 not in open_loop or 1.6 not in open_loop:
        return {}
    pairs = list(zip(open_loop[0.8], open_loop[1.6], strict=False))
    ratios = [
        over["p99_ok_ms"] / steady["p99_ms"] if steady["p99_ms"] else 0.0 for steady, over in pairs
    ]
    median = sorted(range(len(pairs)), key=ratios.__getitem__)[len(pairs) // 2]
    steady, over = pairs[median]
    return {
        "sustainable_rate": steady["rate"],
        "sustainable_p99_ms": steady["p99_ms"],
        "sustainable_errors": steady["errors"],
        "overload_rate": over["rate"],
        "overload_p99_ok_ms": over["p99_ok_ms"],
        "shed_share": over["shed"],
        "overload_throughput": over["throughput"],
        "p99_ratio": ratios[median],
        "rounds": [
            {"sustainable_p99_ms": a["p99_ms"], "overload_p99_ok_ms": b["p99_ok_ms"], "ratio": r}
            for (a, b), r in zip(pairs, ratios, strict=True)
        ],
        "sustainable_p99_ms_worst": max(a["p99_ms"] for a, _ in pairs),
    }


def explain_phase(
    server: ServerProcess, items: list[str], users: list[str], clients: int, duration: float
) -> dict[str, Any]:
    """Returning users' Recommend with and without explanations, closed loop at 1 and 8
    callers, measured back to back: the cost of an explained request as ratios."""
    out: dict[str, Any] = {}
    for concurrency in (1, 8):
        for explain in (False, True):
            row = measure(
                server,
                "mixed",
                items,
                users,
                concurrency=concurrency,
                clients=clients,
                duration=duration,
                explain=explain,
            )
            out[f"c{concurrency}_{'explained' if explain else 'plain'}"] = row
        plain, explained = out[f"c{concurrency}_plain"], out[f"c{concurrency}_explained"]
        out[f"c{concurrency}_p50_ratio"] = explained["p50_ms"] / max(1e-9, plain["p50_ms"])
        out[f"c{concurrency}_throughput_ratio"] = explained["throughput"] / max(
            1e-9, plain["throughput"]
        )
        print(
            f"explain, {concurrency} caller(s): p50 {plain['p50_ms']:.2f} -> "
            f"{explained['p50_ms']:.2f} ms, p99 {plain['p99_ms']:.2f} -> "
            f"{explained['p99_ms']:.2f} ms, {plain['throughput']:.0f} -> "
            f"{explained['throughput']:.0f} req/s",
            flush=True,
        )
    return out


SIMILAR_LEVEL = 8
SIMILAR_ROUNDS = 3


def similar_phase(
    server: ServerProcess, items: list[str], users: list[str], clients: int, duration: float
) -> dict[str, Any]:
    """SimilarItems (one random item, k=10) beside Recommend for returning users (no
    Feedback in between), closed loop at SIMILAR_LEVEL callers, interleaved for
    SIMILAR_ROUNDS rounds: the median p99 of each and their ratio."""
    rounds: dict[str, list[dict[str, Any]]] = {"recommend": [], "similar": []}
    for _ in range(SIMILAR_ROUNDS):
        for name, traffic in (("recommend", "mixed"), ("similar", "similar")):
            row = measure(
                server, traffic, items, users, concurrency=SIMILAR_LEVEL, clients=clients,
                duration=duration, feedback_share=0.0,
            )  # fmt: skip
            rounds[name].append(row)
    p99 = {name: float(np.median([r["p99_ms"] for r in rows])) for name, rows in rounds.items()}
    rate = {
        name: float(np.median([r["throughput"] for r in rows])) for name, rows in rounds.items()
    }
    errors = sum(sum(r["errors"].values()) for rows in rounds.values() for r in rows)
    out = {
        "concurrency": SIMILAR_LEVEL,
        "rounds": SIMILAR_ROUNDS,
        "recommend_p99_ms": p99["recommend"],
        "similar_p99_ms": p99["similar"],
        "p99_ratio": p99["similar"] / max(1e-9, p99["recommend"]),
        "recommend_throughput": rate["recommend"],
        "similar_throughput": rate["similar"],
        "errors": errors,
    }
    print(
        f"SimilarItems at {SIMILAR_LEVEL} callers: p99 {p99['similar']:.2f} ms vs Recommend "
        f"{p99['recommend']:.2f} ms = {out['p99_ratio']:.2f} x ({rate['similar']:.0f} vs "
        f"{rate['recommend']:.0f} req/s; median of {SIMILAR_ROUNDS} interleaved rounds)",
        flush=True,
    )
    return out
