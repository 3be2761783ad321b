"""Measuring a server of the serving benchmarks: closed- and open-loop runs from load
generator processes, interleaved sweeps over concurrency, per-stage latencies, and the
table's rows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.loadgen import LoadSpec, run_load, summarize
from bench.processes import ServerProcess

P99_LIMIT_MS = 50.0


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
    feedback_share: float = 0.2,
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
            feedback_share=feedback_share,
        )
        for i in range(clients)
    ]
    before, cpu_before = server.batch_counters(), server.cpu_seconds()
    summary = summarize(run_load(specs))
    after, cpu_after = server.batch_counters(), server.cpu_seconds()
    batches = after[0] - before[0]
    summary["mean_batch_size"] = (after[1] - before[1]) / batches if batches else 0.0
    # The server's CPU per answered call, measured over the same seconds: on cores shared
    # with the load generator, what a server spends per call decides its closed-loop rate.
    answered = summary["calls_per_s"] * duration
    summary["cpu_ms_per_call"] = (cpu_after - cpu_before) * 1000 / answered if answered else 0.0
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
    level ``rounds`` times in turn, the order reversed every other round (a machine that
    slows or speeds up during a round then favours no server); returns one row per server
    and level (the round of median throughput, with every round's throughput in round
    order) and each server's best throughput with p99 <= limit and no errors."""
    rows = []
    best = {server.name: 0.0 for server in servers}
    active = list(servers)
    for level in levels:
        measured: dict[str, list[dict[str, Any]]] = {server.name: [] for server in active}
        for round_ in range(rounds):
            for server in active if round_ % 2 == 0 else active[::-1]:
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
            print(row_text(row), flush=True)
            if row["p99_ms"] <= P99_LIMIT_MS and not row["errors"]:
                best[server.name] = max(best[server.name], row["throughput"])
            elif row["p99_ms"] > 2 * P99_LIMIT_MS:
                active.remove(server)  # past its knee: higher levels only queue
    return rows, best


def by_level(rows: list[dict[str, Any]], ours: str, other: str) -> dict[str, dict[int, float]]:
    """Per traffic and concurrency (levels that both servers ran): the median over the
    rounds of our throughput over ``other``'s in the same round. The two measurements of
    a round are seconds apart, while on a shared host the same server's rounds have
    differed twofold minutes apart: a ratio of each server's median would compare
    different minutes. Rows without rounds: the ratio of their throughputs."""
    table: dict[str, dict[int, float]] = {}
    found = {(r["server"], r["traffic"], r["concurrency"]): r for r in rows}
    for (server, traffic, level), row in found.items():
        base = found.get((other, traffic, level))
        if server != ours or not base or not base["throughput"]:
            continue
        mine, theirs = row.get("rounds_throughput"), base.get("rounds_throughput")
        if mine and theirs and len(mine) == len(theirs) and all(theirs):
            ratio = float(np.median([a / b for a, b in zip(mine, theirs, strict=True)]))
        else:
            ratio = row["throughput"] / base["throughput"]
        table.setdefault(traffic, {})[level] = ratio
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


def row_text(row: dict[str, Any]) -> str:
    errors = ",".join(f"{k}:{v}" for k, v in row["errors"].items()) or "-"
    load = f"c={row['concurrency']}" if row["loop"] == "closed" else f"rate={row['rate']:.0f}"
    return (
        f"{row.get('server', ''):<16}{row['traffic']:<7}{row['loop']:<7}{load:<11}"
        f"{row['throughput']:>9.1f}{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}"
        f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.1f}{row['mean_batch_size']:>8.2f}"
        f"{row.get('cpu_ms_per_call', 0.0):>8.2f}  {errors}"
    )


HEADER = (
    f"{'server':<16}{'traffic':<7}{'loop':<7}{'load':<11}{'req/s':>9}{'p50':>9}{'p95':>9}"
    f"{'p99':>9}{'max':>9}{'batch':>8}{'cpu ms':>8}  errors"
)
