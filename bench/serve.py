"""`recserve bench serve` (`make bench-serve`): serving throughput and latency, side by side.

In one run, on the same machine, with an ML-1M-sized model (3,416 items, history up to
200, d=64, 2 blocks; random weights unless --bundle names a trained bundle):

- (a) the gRPC ceiling: the same server stack with the no-op backend;
- (b) the model ceiling: the ONNX Runtime backend in-process, best batch size, no RPC;
- the naive baseline: the same server and graph with batching and caches disabled;
- recserve as configured (dynamic batching, state cache).

Each server runs as its own `recserve serve` process; the load comes from separate
client processes (bench/loadgen.py). Closed-loop sweeps over concurrency find each
server's best throughput with p99 <= 50 ms, for cold traffic (inline histories the
server has never seen) and mixed traffic (returning users, ~20% of requests preceded by
a Feedback for that user). An open-loop run at a fixed arrival rate, the idle latency,
bulk RecommendBatch calls (``bulk_vs_single``) and 20 hot swaps under load complete the
picture. Prints a table and writes JSON whose top level has
``efficiency`` = ours_cold / (1 / (1/a + 1/b)), ``speedup_vs_naive`` (cold) and
``mixed_vs_noop`` = ours_mixed / a.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import LoadSpec, run_load, summarize
from bench.processes import ServerProcess, rss_mb
from server.history import HISTORY_KEEP
from server.registry import inflight_batches
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.bundle import ModelConfig
from shared.storage import event_store, model_store
from shared.storage.engine import engine_for, migrate, session_scope
from shared.storage.tables import FeedbackEventCreate, ModelStatus, ModelVersion

P99_LIMIT_MS = 50.0
BENCH_CONFIG = ModelConfig(num_items=3416, max_len=200, d_model=64, n_heads=1, n_blocks=2)
N_USERS = 2000
IDLE_ROUNDS = 5
OVERLOAD_ROUNDS = 3


def prepare(
    data_dir: Path, bundle_path: Path | None, *, full_histories: bool = False
) -> tuple[Settings, list[str], list[str]]:
    """A bench database with one active ML-1M-sized model and N_USERS stored histories of
    100..200 events, or of HISTORY_KEEP events each with ``full_histories`` (the server
    then keeps every user's history at its bounded size from the start: what a long-running
    server with returning users looks like)."""
    settings = Settings(data_dir=data_dir)
    migrate(settings.db_url)
    engine = engine_for(settings)
    if bundle_path is None:
        bundle_path = data_dir / "models" / "bench-random"
        if not (bundle_path / bundle_format.CHECKSUMS).exists():
            import torch

            from shared.model.sasrec import SASRec
            from worker.export import write_bundle

            torch.manual_seed(0)
            model = SASRec(BENCH_CONFIG).eval()
            vocab = [str(i) for i in range(1, BENCH_CONFIG.num_items + 1)]
            popularity = np.ones(BENCH_CONFIG.num_items + 1)
            popularity[0] = 0
            write_bundle(bundle_path, model=model, vocab=vocab, popularity=popularity, metrics={})
    loaded = bundle_format.load(bundle_path)
    items = loaded.vocab
    users = [f"bench-user-{u}" for u in range(N_USERS)]
    with session_scope(engine) as session:
        active = model_store.get_active_model(session)
        if active is None or Path(active.artifact_path) != bundle_path.resolve():
            model_row = model_store.create_model_version(
                session,
                model=ModelVersion(
                    status=ModelStatus.READY,
                    artifact_path=str(bundle_path.resolve()),
                    checksum=loaded.checksum,
                    config={"model": loaded.config.model_dump()},
                ),
            )
            model_store.activate_model(
                session, version=int(model_row.version or 0), reason="recserve bench serve"
            )
        have = event_store.count_events(session)
    least = HISTORY_KEEP if full_histories else 100
    if have < N_USERS * least:
        rng = np.random.default_rng(1)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for chunk in range(0, N_USERS, 200):
            events = [
                FeedbackEventCreate(
                    event_id=f"bench-{u}-{i}",
                    user_id=users[u],
                    item_id=items[int(rng.integers(0, len(items)))],
                    event_time=start + timedelta(minutes=i),
                )
                for u in range(chunk, min(N_USERS, chunk + 200))
                for i in range(HISTORY_KEEP if full_histories else int(rng.integers(100, 201)))
            ]
            with session_scope(engine) as session:
                event_store.insert_events(session, events=events)
    engine.dispose()
    return settings, items, users


def measure(
    server: ServerProcess,
    traffic: str,
    items: list[str],
    users: list[str],
    *,
    loop: str = "closed",
    concurrency: int = 1,
    rate: float = 0.0,
    clients: int,
    duration: float,
    bulk: int = 0,
    explain: bool = False,
) -> dict[str, Any]:
    clients = max(1, min(clients, concurrency if loop == "closed" else clients))
    per = [concurrency // clients + (1 if i < concurrency % clients else 0) for i in range(clients)]
    specs = [
        LoadSpec(
            target=server.target,
            traffic=traffic,
            loop=loop,
            concurrency=per[i],
            rate=rate / clients,
            duration_s=duration,
            items=tuple(items),
            users=tuple(users),
            seed=1000 * i + concurrency,
            bulk=bulk,
            explain=explain,
        )
        for i in range(clients)
    ]
    before = server.batch_counters()
    summary = summarize(run_load(specs))
    after = server.batch_counters()
    batches = after[0] - before[0]
    summary["mean_batch_size"] = (after[1] - before[1]) / batches if batches else 0.0
    summary.update(
        {"traffic": traffic, "loop": loop, "concurrency": concurrency, "rate": rate, "bulk": bulk}
    )
    return summary


def warm_histories(server: ServerProcess, users: list[str]) -> None:
    """One Recommend per returning user, so the measured runs see a warm server (no
    database reads on the hot path), as a long-running server would."""
    import grpc

    from shared.proto.recserve.v1 import recommender_pb2 as pb
    from shared.proto.recserve.v1 import recommender_pb2_grpc

    with grpc.insecure_channel(server.target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for start in range(0, len(users), 8):
            futures = [
                (u, stub.Recommend.future(pb.RecommendRequest(user_id=u, k=1), timeout=60))
                for u in users[start : start + 8]
            ]
            for user, future in futures:
                try:
                    future.result()
                except grpc.RpcError as exc:  # shed: back off and ask again, as clients should
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                        raise
                    time.sleep(0.05)
                    stub.Recommend(pb.RecommendRequest(user_id=user, k=1), timeout=60)


def sweep(
    servers: list[ServerProcess],
    traffic: str,
    items: list[str],
    users: list[str],
    levels: list[int],
    clients: int,
    duration: float,
    rounds: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Closed-loop sweep of every server, interleaved level by level (so the servers'
    figures at one level come from the same minute of a shared, noisy machine), each
    level ``rounds`` times in turn; returns one row per server and level (the round of
    median throughput, with every round's throughput) and each server's best throughput
    with p99 <= limit and no errors."""
    rows = []
    best = {server.name: 0.0 for server in servers}
    active = list(servers)
    for level in levels:
        measured: dict[str, list[dict[str, Any]]] = {server.name: [] for server in active}
        for _ in range(rounds):
            for server in active:
                row = measure(
                    server,
                    traffic,
                    items,
                    users,
                    concurrency=level,
                    clients=clients,
                    duration=duration,
                )
                measured[server.name].append(row)
        for server in list(active):
            runs = sorted(measured[server.name], key=lambda r: r["throughput"])
            row = dict(runs[len(runs) // 2])
            row["server"] = server.name
            row["rounds_throughput"] = [r["throughput"] for r in measured[server.name]]
            rows.append(row)
            print(_row_text(row), flush=True)
            if row["p99_ms"] <= P99_LIMIT_MS and not row["errors"]:
                best[server.name] = max(best[server.name], row["throughput"])
            elif row["p99_ms"] > 2 * P99_LIMIT_MS:
                active.remove(server)  # past its knee: higher levels only queue
    return rows, best


def by_level(rows: list[dict[str, Any]], ours: str, other: str) -> dict[str, dict[int, float]]:
    """Per traffic and concurrency: our median throughput over ``other``'s (levels that
    both servers ran)."""
    table: dict[str, dict[int, float]] = {}
    found = {(r["server"], r["traffic"], r["concurrency"]): r["throughput"] for r in rows}
    for (server, traffic, level), value in found.items():
        if server == ours and found.get((other, traffic, level)):
            table.setdefault(traffic, {})[level] = value / found[(other, traffic, level)]
    return table


STAGE_LEVEL = 8
"""The closed-loop concurrency at which the per-stage latencies are read."""


def stage_latencies(
    server: ServerProcess, items: list[str], users: list[str], clients: int, duration: float
) -> dict[str, dict[str, float]]:
    """Mean milliseconds per pipeline stage over one cold and one mixed closed-loop run at
    STAGE_LEVEL callers, from the server's own recserve_stage_seconds histogram."""
    out: dict[str, dict[str, float]] = {}
    for traffic in ("cold", "mixed"):
        before = server.stage_seconds()
        measure(
            server,
            traffic,
            items,
            users,
            concurrency=STAGE_LEVEL,
            clients=clients,
            duration=duration,
        )
        after = server.stage_seconds()
        out[traffic] = {
            stage: (total - before.get(stage, (0.0, 0))[0])
            * 1000.0
            / (count - before.get(stage, (0.0, 0))[1])
            for stage, (total, count) in after.items()
            if count > before.get(stage, (0.0, 0))[1]
        }
        print(
            f"stages, {traffic}, {STAGE_LEVEL} callers (mean ms): "
            + "  ".join(f"{stage} {ms:.3f}" for stage, ms in out[traffic].items()),
            flush=True,
        )
    return out


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
    import shutil
    import threading

    from shared.client import Client
    from shared.proto.recserve.v1 import admin_pb2

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
    steady = measure(
        server, "cold", items, users, concurrency=concurrency, clients=clients, duration=duration
    )
    rss_before = rss_mb(server.proc.pid)
    outcome: dict[str, Any] = {}

    def load() -> None:
        outcome["row"] = measure(
            server,
            "cold",
            items,
            users,
            concurrency=concurrency,
            clients=clients,
            duration=duration * 2,
        )

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1.5)  # past the load generator's warm-up
    client = Client(server.target)
    rss_trace: list[float] = []
    for i in range(swaps):
        version = second if i % 2 == 0 else first
        client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=version), timeout=60)
        time.sleep(max(0.05, duration * 1.6 / swaps))
        rss_trace.append(rss_mb(server.proc.pid))
    client.close()
    thread.join()
    rss_after = rss_mb(server.proc.pid)
    swapping = outcome["row"]
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
        print(_row_text(row), flush=True)
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


def _row_text(row: dict[str, Any]) -> str:
    errors = ",".join(f"{k}:{v}" for k, v in row["errors"].items()) or "-"
    load = f"c={row['concurrency']}" if row["loop"] == "closed" else f"rate={row['rate']:.0f}"
    return (
        f"{row.get('server', ''):<16}{row['traffic']:<7}{row['loop']:<7}{load:<11}"
        f"{row['throughput']:>9.1f}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
        f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.1f}{row['mean_batch_size']:>8.2f}  {errors}"
    )


HEADER = (
    f"{'server':<16}{'traffic':<7}{'loop':<7}{'load':<11}{'req/s':>9}{'p50':>9}{'p95':>9}"
    f"{'p99':>9}{'max':>9}{'batch':>8}  errors"
)


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


def run_serve_bench(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or "var/bench/serve")
    bundle_path = Path(args.bundle) if getattr(args, "bundle", None) else None
    levels = [
        int(x) for x in (getattr(args, "levels", None) or "1,4,8,12,16,24,32,48,64").split(",")
    ]
    duration = float(getattr(args, "duration", None) or 5.0)
    clients = int(getattr(args, "clients", None) or 2)
    sweep_rounds = int(getattr(args, "rounds", None) or 1)
    sweeps_only = bool(getattr(args, "sweeps_only", False))
    before_tree = Path(args.before) if getattr(args, "before", None) else None
    settings, items, users = prepare(data_dir, bundle_path)
    with session_scope(engine_for(settings)) as session:
        active = model_store.get_active_model(session)
        assert active is not None
        active_path = Path(active.artifact_path)
    threads = settings.server.run_threads
    streams = inflight_batches(settings.server, "cpu")
    print(
        f"model ceiling (ONNX Runtime in-process, histories of 200, {streams} concurrent "
        f"run(s) of {threads} thread(s), as the server runs it):",
        flush=True,
    )
    ceiling = model_ceiling(active_path, threads, streams)
    for batch, rate in ceiling["seq_per_s_by_batch"].items():
        print(f"  batch {batch:>4}: {rate:8.1f} seq/s")
    print(HEADER)
    rows: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    idle: dict[str, float] = {}
    result_swap: dict[str, Any] = {}
    result_bulk: dict[str, Any] = {}
    result_explain: dict[str, Any] = {}
    open_loop: dict[float, list[dict[str, Any]]] = {}
    stages: dict[str, dict[str, float]] = {}
    selected = (getattr(args, "servers", None) or "noop,naive,recserve,recserve-nolog").split(",")
    if before_tree is not None:
        selected.append("before")
    servers = [
        # recserve as an earlier checkout built it, same settings: a before/after comparison.
        ("before", {}),
        ("noop", {"backend": "noop"}),
        ("naive", {}),
        ("recserve", {}),
        # The same server without the impression log: what logging costs, same minutes.
        ("recserve-nolog", {"log_impressions": "false"}),
        # Two model runs at once on the CPU whatever their threads (only when named).
        ("recserve-2runs", {"max_inflight_batches": "2"}),
        # One thread per run, so one run per core at once (only when named).
        ("recserve-1thread", {"intra_op_threads": "1"}),
    ]
    running: list[ServerProcess] = []
    try:
        for name, extra in [(n, e) for n, e in servers if n in selected]:
            running.append(
                ServerProcess(
                    settings,
                    name,
                    extra,
                    naive=name == "naive",
                    source=before_tree if name == "before" else None,
                )
            )
        # Idle latency in interleaved rounds (each server in turn, IDLE_ROUNDS times; the
        # median of each server's rounds): on a shared machine, one long run per server
        # would compare different minutes as much as different servers.
        rounds: dict[str, list[float]] = {server.name: [] for server in running}
        for _ in range(IDLE_ROUNDS):
            for server in running:
                idle_row = measure(
                    server,
                    "cold",
                    items,
                    users,
                    concurrency=1,
                    clients=1,
                    duration=max(2, duration // IDLE_ROUNDS),
                )
                rounds[server.name].append(idle_row["p50_ms"])
        idle = {name: float(np.median(values)) for name, values in rounds.items()}
        for traffic in ("cold", "mixed"):
            if traffic == "mixed":
                for server in running:
                    warm_histories(server, users)
            found, top = sweep(
                running, traffic, items, users, levels, clients, duration, sweep_rounds
            )
            rows.extend(found)
            best.update({f"{name}_{traffic}": value for name, value in top.items()})
        ours = next((server for server in running if server.name == "recserve"), None)
        for other in running:
            if other is not ours:
                other.stop()
        running = [ours] if ours else []
        if ours is not None:
            stages = stage_latencies(ours, items, users, clients, duration)
        if ours is not None and best.get("recserve_cold") and not sweeps_only:
            result_swap = swap_phase(
                ours, settings, items, users, concurrency=8, clients=clients, duration=duration
            )
            print(
                f"hot swap x{result_swap['swaps']} under load: p99 "
                f"{result_swap['swapping_p99_ms']:.1f} ms vs steady "
                f"{result_swap['steady_p99_ms']:.1f} ms, errors "
                f"{result_swap['errors_during_swaps'] or 'none'}, RSS "
                f"{result_swap['rss_mb_before']:.0f} -> {result_swap['rss_mb_after']:.0f} MB"
                f" (max over swaps 1-10: {result_swap['rss_mb_max_first_half']:.0f}, "
                f"11-20: {result_swap['rss_mb_max_second_half']:.0f})",
                flush=True,
            )
            result_bulk = bulk_phase(ours, items, users, clients, duration)
            result_explain = explain_phase(ours, items, users, clients, duration)
            # Open loop: the sustainable rate is 80% of the best closed-loop cold rate;
            # then twice that, where the excess must be shed and the accepted keep their p99.
            # The pair runs OVERLOAD_ROUNDS times in turn: the ratio is taken within a round.
            for share in (0.5, *[0.8, 1.6] * OVERLOAD_ROUNDS):
                row = measure(
                    ours,
                    "cold",
                    items,
                    users,
                    loop="open",
                    rate=share * best["recserve_cold"],
                    clients=clients,
                    duration=duration,
                )
                row["server"] = ours.name
                rows.append(row)
                open_loop.setdefault(share, []).append(row)
                print(_row_text(row), flush=True)
    finally:
        for server in running:
            server.stop()
    for key in (
        "noop_cold",
        "noop_mixed",
        "naive_cold",
        "naive_mixed",
        "recserve_cold",
        "recserve_mixed",
        "recserve-nolog_mixed",
    ):
        best.setdefault(key, 0.0)
    for key in ("noop", "naive", "recserve"):
        idle.setdefault(key, 0.0)
    a = best["noop_cold"]
    b = ceiling["best_seq_per_s"]
    bound = 1.0 / (1.0 / a + 1.0 / b) if a and b else 0.0
    result: dict[str, Any] = {
        "efficiency": best["recserve_cold"] / bound if bound else 0.0,
        "speedup_vs_naive": best["recserve_cold"] / best["naive_cold"]
        if best["naive_cold"]
        else float("inf"),
        "mixed_vs_noop": best["recserve_mixed"] / a if a else 0.0,
        "mixed_vs_naive": best["recserve_mixed"] / best["naive_mixed"]
        if best["naive_mixed"]
        else float("inf"),
        "idle_p50_ms": idle["recserve"],
        "idle_rounds_p50_ms": rounds,
        "idle_bound_ms": 2 * (ceiling["batch1_latency_ms"] + idle["noop"]),
        "grpc_ceiling_a": a,
        "model_ceiling_b": b,
        "combined_bound": bound,
        "best_throughput_at_p99_limit": best,
        "p99_limit_ms": P99_LIMIT_MS,
        "model_ceiling": ceiling,
        "hot_swap": result_swap,
        "bulk": result_bulk,
        "explain": result_explain,
        "bulk_vs_single": result_bulk.get("best_users_per_s", 0.0) / best["recserve_cold"]
        if best["recserve_cold"]
        else 0.0,
        "idle_vs_naive": idle["recserve"] / idle["naive"] if idle["naive"] else 0.0,
        "impression_logging_cost": 1.0 - best["recserve_mixed"] / best["recserve-nolog_mixed"]
        if best["recserve-nolog_mixed"]
        else 0.0,
        "overload": overload_summary(open_loop),
        "vs_naive_by_level": by_level(rows, "recserve", "naive"),
        "vs_before_by_level": by_level(rows, "recserve", "before"),
        "stage_ms_at_level": {"concurrency": STAGE_LEVEL, **stages},
        "rows": rows,
        "model": bundle_format.load(active_path).config.model_dump(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "clients": clients,
            "duration_s": duration,
            "levels": levels,
            "rounds": sweep_rounds,
            "before": str(before_tree) if before_tree else None,
        },
    }
    print(
        f"\n(a) gRPC ceiling {a:.0f} req/s   (b) model ceiling {b:.0f} seq/s   "
        f"bound {bound:.0f} req/s"
    )
    print(
        f"efficiency {result['efficiency']:.2f}   speedup_vs_naive "
        f"{result['speedup_vs_naive']:.2f}   mixed_vs_noop {result['mixed_vs_noop']:.2f}   "
        f"mixed_vs_naive {result['mixed_vs_naive']:.2f}"
    )
    print(
        f"bulk: RecommendBatch of {BULK_SIZE} users: "
        f"{result_bulk.get('best_users_per_s', 0.0):.0f} users/s at call p99 <= "
        f"{BULK_P99_LIMIT_MS:.0f} ms = {result['bulk_vs_single']:.2f} x single Recommend (cold)"
    )
    print(
        f"idle p50 {idle['recserve']:.2f} ms (limit {result['idle_bound_ms']:.2f} ms = 2 x "
        f"(model batch-1 {ceiling['batch1_latency_ms']:.2f} + no-op p50 {idle['noop']:.2f})); "
        f"naive {idle['naive']:.2f} ms: recserve / naive {result['idle_vs_naive']:.2f}"
    )
    if best["recserve-nolog_mixed"]:
        print(
            f"impression logging: mixed {best['recserve_mixed']:.0f} req/s with it, "
            f"{best['recserve-nolog_mixed']:.0f} without: costs "
            f"{result['impression_logging_cost']:.1%} of mixed throughput"
        )
    for name in ("naive", "before"):
        for traffic, ratios in result[f"vs_{name}_by_level"].items():
            print(
                f"recserve / {name}, {traffic}, median throughput per level: "
                + "  ".join(f"c={level} {ratio:.2f}" for level, ratio in ratios.items())
            )
    overload = result["overload"]
    if overload:
        print(
            f"open loop at the sustainable rate ({overload['sustainable_rate']:.0f}/s, 80% of the "
            f"best closed-loop): p99 {overload['sustainable_p99_ms']:.1f} ms; at 2x: "
            f"{overload['shed_share']:.0%} shed, accepted p99 {overload['overload_p99_ok_ms']:.1f}"
            f" ms = {overload['p99_ratio']:.2f} x"
        )
    out = Path(args.output or "bench-results/serve.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {out.resolve()}")
    return 0
