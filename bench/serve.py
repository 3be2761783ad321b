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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.processes import ServerProcess
from bench.serve_measure import (
    HEADER,
    P99_LIMIT_MS,
    STAGE_LEVEL,
    by_level,
    measure,
    row_text,
    stage_latencies,
    sweep,
    warm_histories,
)
from bench.serve_phases import (
    BULK_P99_LIMIT_MS,
    BULK_SIZE,
    bulk_phase,
    explain_phase,
    model_ceiling,
    overload_summary,
    similar_phase,
    swap_phase,
)
from bench.serve_stage import prepare
from server.model_loader import inflight_batches
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.storage import model_store
from shared.storage.engine import engine_for, session_scope

IDLE_ROUNDS = 5
OVERLOAD_ROUNDS = 3
DEFAULT_SERVERS = "noop,naive,recserve,recserve-nolog"
SERVERS: list[tuple[str, dict[str, str]]] = [
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
    # No waiting for a fuller batch once a run slot is free (only when named).
    ("recserve-nowait", {"max_batch_wait_ms": "0"}),
]


@dataclass
class Options:
    """What `recserve bench serve` was asked for (the CLI's flags, with their defaults)."""

    data_dir: Path
    bundle: Path | None
    levels: list[int]
    duration: float
    clients: int
    rounds: int
    sweeps_only: bool
    before: Path | None
    servers: list[str]
    output: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        def given(name: str) -> Any:
            return getattr(args, name, None)

        servers = (given("servers") or DEFAULT_SERVERS).split(",")
        return cls(
            data_dir=Path(given("data_dir") or "var/bench/serve"),
            bundle=Path(given("bundle")) if given("bundle") else None,
            levels=[int(x) for x in (given("levels") or "1,4,8,12,16,24,32,48,64").split(",")],
            duration=float(given("duration") or 5.0),
            clients=int(given("clients") or 2),
            rounds=int(given("rounds") or 1),
            sweeps_only=bool(given("sweeps_only")),
            before=Path(given("before")) if given("before") else None,
            servers=[*servers, "before"] if given("before") else servers,
            output=Path(given("output") or "bench-results/serve.json"),
        )


@dataclass
class Load:
    """The traffic every measurement sends: the catalogue, the stored users, how many
    load-generator processes, and for how long."""

    items: list[str]
    users: list[str]
    clients: int
    duration: float


def start_servers(settings: Settings, options: Options) -> list[ServerProcess]:
    return [
        ServerProcess(
            settings,
            name,
            extra,
            naive=name == "naive",
            source=options.before if name == "before" else None,
        )
        for name, extra in SERVERS
        if name in options.servers
    ]


def idle_rounds(running: list[ServerProcess], load: Load) -> dict[str, list[float]]:
    """Idle latency (p50 at one caller) in interleaved rounds, each server in turn,
    IDLE_ROUNDS times: on a shared machine, one long run per server would compare
    different minutes as much as different servers."""
    rounds: dict[str, list[float]] = {server.name: [] for server in running}
    for _ in range(IDLE_ROUNDS):
        for server in running:
            row = measure(
                server, "cold", load.items, load.users, concurrency=1, clients=1,
                duration=max(2, load.duration // IDLE_ROUNDS),
            )  # fmt: skip
            rounds[server.name].append(row["p50_ms"])
    return rounds


def sweeps(
    running: list[ServerProcess], load: Load, options: Options
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Cold, then mixed closed-loop sweeps of every server; rows and best throughputs."""
    rows: list[dict[str, Any]] = []
    best: dict[str, float] = {}
    for traffic in ("cold", "mixed"):
        if traffic == "mixed":
            for server in running:
                warm_histories(server, load.users)
        found, top = sweep(
            running, traffic, load.items, load.users, options.levels, load.clients,
            load.duration, options.rounds,
        )  # fmt: skip
        rows.extend(found)
        best.update({f"{name}_{traffic}": value for name, value in top.items()})
    return rows, best


def open_loop(
    ours: ServerProcess, load: Load, best_cold: float, rows: list[dict[str, Any]]
) -> dict[float, list[dict[str, Any]]]:
    """Open loop: the sustainable rate is 80% of the best closed-loop cold rate; then
    twice that, where the excess must be shed and the accepted keep their p99. The pair
    runs OVERLOAD_ROUNDS times in turn: the ratio is taken within a round."""
    by_share: dict[float, list[dict[str, Any]]] = {}
    for share in (0.5, *[0.8, 1.6] * OVERLOAD_ROUNDS):
        row = measure(
            ours, "cold", load.items, load.users, loop="open", rate=share * best_cold,
            clients=load.clients, duration=load.duration,
        )  # fmt: skip
        row["server"] = ours.name
        rows.append(row)
        by_share.setdefault(share, []).append(row)
        print(row_text(row), flush=True)
    return by_share


def phases(
    ours: ServerProcess, settings: Settings, load: Load, best_cold: float, rows: list[Any]
) -> dict[str, Any]:
    """Hot swaps, bulk calls, explanations and the open loop, on recserve alone."""
    swap = swap_phase(
        ours, settings, load.items, load.users, concurrency=8, clients=load.clients,
        duration=load.duration,
    )  # fmt: skip
    print(
        f"hot swap x{swap['swaps']} under load: p99 {swap['swapping_p99_ms']:.1f} ms vs steady "
        f"{swap['steady_p99_ms']:.1f} ms, errors {swap['errors_during_swaps'] or 'none'}, RSS "
        f"{swap['rss_mb_before']:.0f} -> {swap['rss_mb_after']:.0f} MB (max over swaps 1-10: "
        f"{swap['rss_mb_max_first_half']:.0f}, 11-20: {swap['rss_mb_max_second_half']:.0f})",
        flush=True,
    )
    return {
        "hot_swap": swap,
        "bulk": bulk_phase(ours, load.items, load.users, load.clients, load.duration),
        "explain": explain_phase(ours, load.items, load.users, load.clients, load.duration),
        "similar": similar_phase(ours, load.items, load.users, load.clients, load.duration),
        "open_loop": open_loop(ours, load, best_cold, rows),
    }


def run_serve_bench(args: argparse.Namespace) -> int:
    options = Options.from_args(args)
    settings, items, users = prepare(options.data_dir, options.bundle)
    load = Load(items, users, options.clients, options.duration)
    with session_scope(engine_for(settings)) as session:
        active = model_store.get_active_model(session)
        assert active is not None
        active_path = Path(active.artifact_path)
    ceiling = ceiling_of(settings, active_path)
    print(HEADER)
    stages: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {}
    running = start_servers(settings, options)
    try:
        rounds = idle_rounds(running, load)
        rows, best = sweeps(running, load, options)
        ours = next((server for server in running if server.name == "recserve"), None)
        for other in running:
            if other is not ours:
                other.stop()
        running = [ours] if ours else []
        if ours is not None:
            stages = stage_latencies(ours, items, users, load.clients, load.duration)
            if best.get("recserve_cold") and not options.sweeps_only:
                extra = phases(ours, settings, load, best["recserve_cold"], rows)
    finally:
        for server in running:
            server.stop()
    result = summary(best, rounds, ceiling, extra, rows)
    result.update(
        stage_ms_at_level={"concurrency": STAGE_LEVEL, **stages},
        model=bundle_format.load(active_path).config.model_dump(),
        machine={"cpus": os.cpu_count(), "platform": platform.platform()},
        settings={
            "clients": options.clients,
            "duration_s": options.duration,
            "levels": options.levels,
            "rounds": options.rounds,
            "before": str(options.before) if options.before else None,
        },
    )
    print_summary(result)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"wrote {options.output.resolve()}")
    return 0


def ceiling_of(settings: Settings, bundle: Path) -> dict[str, Any]:
    """The model ceiling, run as the server runs the model, printed per batch size."""
    threads = settings.server.run_threads
    streams = inflight_batches(settings.server, "cpu")
    print(
        f"model ceiling (ONNX Runtime in-process, histories of 200, {streams} concurrent "
        f"run(s) of {threads} thread(s), as the server runs it):",
        flush=True,
    )
    ceiling = model_ceiling(bundle, threads, streams)
    for batch, rate in ceiling["seq_per_s_by_batch"].items():
        print(f"  batch {batch:>4}: {rate:8.1f} seq/s")
    return ceiling


def ratio(a: float, b: float, empty: float = 0.0) -> float:
    return a / b if b else empty


def summary(
    best: dict[str, float],
    rounds: dict[str, list[float]],
    ceiling: dict[str, Any],
    extra: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The JSON's figures: ceilings, ratios to the baselines, idle latency and phases."""
    best = {**dict.fromkeys(BEST_KEYS, 0.0), **best}
    idle = {"noop": 0.0, "naive": 0.0, "recserve": 0.0}
    idle.update({name: float(np.median(values)) for name, values in rounds.items()})
    a, b = best["noop_cold"], ceiling["best_seq_per_s"]
    bound = 1.0 / (1.0 / a + 1.0 / b) if a and b else 0.0
    bulk = extra.get("bulk", {})
    return {
        "efficiency": ratio(best["recserve_cold"], bound),
        "speedup_vs_naive": ratio(best["recserve_cold"], best["naive_cold"], float("inf")),
        "mixed_vs_noop": ratio(best["recserve_mixed"], a),
        "mixed_vs_naive": ratio(best["recserve_mixed"], best["naive_mixed"], float("inf")),
        "idle_p50_ms": idle["recserve"],
        "idle_noop_p50_ms": idle["noop"],
        "idle_naive_p50_ms": idle["naive"],
        "idle_rounds_p50_ms": rounds,
        "idle_bound_ms": 2 * (ceiling["batch1_latency_ms"] + idle["noop"]),
        "grpc_ceiling_a": a,
        "model_ceiling_b": b,
        "combined_bound": bound,
        "best_throughput_at_p99_limit": best,
        "p99_limit_ms": P99_LIMIT_MS,
        "model_ceiling": ceiling,
        "hot_swap": extra.get("hot_swap", {}),
        "bulk": bulk,
        "explain": extra.get("explain", {}),
        "similar": extra.get("similar", {}),
        "bulk_vs_single": ratio(bulk.get("best_users_per_s", 0.0), best["recserve_cold"]),
        "idle_vs_naive": ratio(idle["recserve"], idle["naive"]),
        "impression_logging_cost": 1.0
        - ratio(best["recserve_mixed"], best["recserve-nolog_mixed"], 1.0),
        "overload": overload_summary(extra.get("open_loop", {})),
        "vs_naive_by_level": by_level(rows, "recserve", "naive"),
        "vs_before_by_level": by_level(rows, "recserve", "before"),
        "nolog_vs_naive_by_level": by_level(rows, "recserve-nolog", "naive"),
        "rows": rows,
    }


BEST_KEYS = (
    "noop_cold",
    "noop_mixed",
    "naive_cold",
    "naive_mixed",
    "recserve_cold",
    "recserve_mixed",
    "recserve-nolog_mixed",
)


def print_summary(result: dict[str, Any]) -> None:
    best, ceiling = result["best_throughput_at_p99_limit"], result["model_ceiling"]
    a, b, bound = result["grpc_ceiling_a"], result["model_ceiling_b"], result["combined_bound"]
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
        f"{result['bulk'].get('best_users_per_s', 0.0):.0f} users/s at call p99 <= "
        f"{BULK_P99_LIMIT_MS:.0f} ms = {result['bulk_vs_single']:.2f} x single Recommend (cold)"
    )
    print(
        f"idle p50 {result['idle_p50_ms']:.2f} ms (limit {result['idle_bound_ms']:.2f} ms = 2 x "
        f"(model batch-1 {ceiling['batch1_latency_ms']:.2f} + no-op p50 "
        f"{result['idle_noop_p50_ms']:.2f})); naive {result['idle_naive_p50_ms']:.2f} ms: "
        f"recserve / naive {result['idle_vs_naive']:.2f}"
    )
    if best["recserve-nolog_mixed"]:
        print(
            f"impression logging: mixed {best['recserve_mixed']:.0f} req/s with it, "
            f"{best['recserve-nolog_mixed']:.0f} without: costs "
            f"{result['impression_logging_cost']:.1%} of mixed throughput"
        )
    for ours, name, key in (
        ("recserve", "naive", "vs_naive_by_level"),
        ("recserve", "before", "vs_before_by_level"),
        ("recserve-nolog", "naive", "nolog_vs_naive_by_level"),
    ):
        for traffic, ratios in result[key].items():
            print(
                f"{ours} / {name}, {traffic}, throughput per level (median of the rounds' "
                "ratios): " + "  ".join(f"c={level} {value:.2f}" for level, value in ratios.items())
            )
    overload = result["overload"]
    if overload:
        print(
            f"open loop at the sustainable rate ({overload['sustainable_rate']:.0f}/s, 80% of the "
            f"best closed-loop): p99 {overload['sustainable_p99_ms']:.1f} ms; at 2x: "
            f"{overload['shed_share']:.0%} shed, accepted p99 {overload['overload_p99_ok_ms']:.1f}"
            f" ms = {overload['p99_ratio']:.2f} x"
        )
