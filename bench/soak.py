"""`recserve bench soak` (`make soak`): a long run of steady mixed traffic with hot swaps.

One `recserve serve` process with the ML-1M-sized model (bench/serve.py's data), open-loop
mixed traffic (returning users, a Feedback before about a fifth of the Recommends) at 70%
of the sustainable rate, for ``--minutes`` (10), activating the other of two versions in
the middle of every minute (p99 is reported for the whole minute, its first half, and the
half that starts with the swap). Every user starts with a full history (HISTORY_KEEP events,
the most the server keeps per user), so the caches start at the size they keep: RSS that
grows after that is a leak, not histories filling up. Reported per minute: calls,
errors, p50/p99, the server's RSS. Passes with no error at all and no memory growth after
the first two minutes (the largest RSS of the later minutes at most 5% above minute 2's).

The sustainable rate is measured first, as in the serving benchmark: 80% of the best
closed-loop mixed throughput with p99 <= 50 ms, unless ``--rate`` gives the soak rate.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ingest import cpu_model
from bench.loadgen import LoadResult, LoadSpec, run_load, summarize
from bench.processes import ServerProcess, rss_mb, threads
from bench.serve_measure import P99_LIMIT_MS, measure, warm_histories
from bench.serve_stage import prepare
from shared.client import Client
from shared.proto.recserve.v1 import admin_pb2
from shared.storage import model_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import ModelStatus, ModelVersion

RSS_GROWTH_LIMIT = 0.05


def per_interval(series: list[dict[str, float]], key: str, digits: int) -> str:
    """One figure of the server's 5-second series, interval by interval."""
    return " ".join(f"{sample[key]:.{digits}f}" for sample in series)


def second_version(settings: Any) -> int:
    """A copy of the active version, registered as ready: what the swaps alternate with."""
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            active = model_store.get_active_model(session)
            assert active is not None
            source = settings.bundle_path(active.artifact_path)
            target = source.with_name(source.name + "-soak-copy")
            if not target.exists():
                shutil.copytree(source, target)
            for model in model_store.list_model_versions(session, limit=100):
                if model.artifact_path == str(target) and model.status != ModelStatus.PRUNED:
                    return int(model.version or 0)
            copy = model_store.create_model_version(
                session,
                model=ModelVersion(
                    status=ModelStatus.READY,
                    artifact_path=str(target),
                    checksum=active.checksum,
                    config=active.config,
                    metrics=active.metrics,
                ),
            )
            return int(copy.version or 0)
    finally:
        engine.dispose()


def sustainable_rate(
    server: ServerProcess, items: list[str], users: list[str], clients: int
) -> float:
    """80% of the best mixed closed-loop throughput with p99 within the limit."""
    best = 0.0
    for level in (8, 16, 24, 32):
        row = measure(server, "mixed", items, users, concurrency=level, clients=clients, duration=5)
        print(f"closed loop c={level}: {row['throughput']:.0f}/s p99 {row['p99_ms']:.1f} ms")
        if row["p99_ms"] <= P99_LIMIT_MS and not row["errors"]:
            best = max(best, row["throughput"])
    return 0.8 * best


def open_load(
    server: ServerProcess, items: list[str], users: list[str], rate: float, clients: int, seed: int
) -> LoadResult:
    """30 s of mixed open-loop traffic at ``rate`` from ``clients`` processes."""
    specs = [
        LoadSpec(
            target=server.target,
            traffic="mixed",
            loop="open",
            rate=rate / clients,
            duration_s=30,
            warmup_s=0,
            items=tuple(items),
            users=tuple(users),
            seed=seed + i,
        )
        for i in range(clients)
    ]
    return run_load(specs)


def soak_minute(
    server: ServerProcess,
    client: Client,
    load: Callable[[int], LoadResult],
    version: int,
) -> tuple[dict[str, Any], LoadResult]:
    """Half a minute steady, then half a minute from a hot swap to ``version``: the
    minute's row, with the server's own view of it per 5 s."""

    def swap() -> None:
        client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=version), timeout=60)

    steady = load(0)
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    swapping = load(1)
    swapper.join(60)
    both = LoadResult(users_per_call=steady.users_per_call)
    both.add(steady)
    both.add(swapping)
    summary = summarize(both)
    row = {
        "calls": summary["requests"] + summary["feedback_calls"],
        "errors": summary["errors"],
        "error_details": dict(both.details),
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "p99_steady_ms": summarize(steady)["p99_ms"],
        "p99_swap_ms": summarize(swapping)["p99_ms"],
        "feedback_p99_ms": summary["feedback_p99_ms"],
        "rss_mb": rss_mb(server.proc.pid),
        "threads": threads(server.proc.pid),
        "swapped_to": version,
    }
    stats = client.admin.GetServerStats(admin_pb2.GetServerStatsRequest(), timeout=10)
    row["server_series"] = [
        {
            "at_ms": sample.at_ms,
            "p99_ms": sample.latency_p99_ms,
            "error_rate": sample.error_rate,
            "mean_batch_size": sample.mean_batch_size,
            "loop_lag_max_ms": sample.loop_lag_max_ms,
            "gc_ms": sample.gc_ms,
            "mean_run_ms": sample.mean_run_ms,
        }
        for sample in stats.series[-12:]
    ]
    return row, both


def print_minute(minute: int, row: dict[str, Any], both: LoadResult) -> None:
    errors = sum(row["errors"].values())
    print(
        f"minute {minute:>2}: {row['calls']:>7} calls  errors {errors}  p50 "
        f"{row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms (first half "
        f"{row['p99_steady_ms']:.1f}, from the swap {row['p99_swap_ms']:.1f})  RSS "
        f"{row['rss_mb']:6.1f} MB, {row['threads']} threads  (swapped to v{row['swapped_to']})",
        flush=True,
    )
    series = row["server_series"]
    print(
        f"           Feedback p99 {row['feedback_p99_ms']:.1f} ms; the server's "
        f"Recommend p99 per 5 s: {per_interval(series, 'p99_ms', 0)}\n"
        "           event loop's largest lag per 5 s (ms): "
        f"{per_interval(series, 'loop_lag_max_ms', 0)}; garbage collection (ms): "
        f"{per_interval(series, 'gc_ms', 0)}\n"
        "           model runs per 5 s: histories per run "
        f"{per_interval(series, 'mean_batch_size', 1)}; mean run (ms): "
        f"{per_interval(series, 'mean_run_ms', 2)}",
        flush=True,
    )
    for detail, count in both.details.items():
        print(f"           {count} x {detail}", flush=True)


def run_soak(
    data_dir: Path, *, minutes: int, rate: float | None, clients: int, output: Path
) -> dict[str, Any]:
    settings, items, users = prepare(data_dir, None, full_histories=True)
    other = second_version(settings)
    # INFO: the log then holds each swap's loading and pre-encoding times.
    server = ServerProcess(settings, "soak", env={"RECSERVE_LOG_LEVEL": "INFO"})
    client = Client(server.target)
    rows: list[dict[str, Any]] = []
    try:
        with session_scope(engine_for(settings)) as session:
            active = model_store.get_active_model(session)
            first = int(active.version or 0) if active else 0
        warm_histories(server, users)
        sustainable = (
            sustainable_rate(server, items, users, clients) if rate is None else rate / 0.7
        )
        rate = 0.7 * sustainable if rate is None else rate
        print(f"soak: {rate:.0f} requests/s ({minutes} minutes, a hot swap each minute)")
        for minute in range(1, minutes + 1):
            version = [other, first][minute % 2]

            def load(half: int, minute: int = minute, rate: float = rate) -> LoadResult:
                return open_load(server, items, users, rate, clients, minute * 100 + half * 10)

            row, both = soak_minute(server, client, load, version)
            rows.append({"minute": minute, **row})
            print_minute(minute, row, both)
    finally:
        client.close()
        server.stop()
    return soak_report(rows, rate, sustainable, output)


def soak_report(
    rows: list[dict[str, Any]], rate: float, sustainable: float, output: Path
) -> dict[str, Any]:
    errors = sum(sum(r["errors"].values()) for r in rows)
    later = [r["rss_mb"] for r in rows[2:]]
    baseline = rows[1]["rss_mb"] if len(rows) > 1 else 0.0
    growth = (max(later) - baseline) / baseline if later and baseline else 0.0
    report = {
        "passed": errors == 0 and growth <= RSS_GROWTH_LIMIT,
        "errors": errors,
        "rss_growth_after_minute_2": growth,
        "rate": rate,
        "sustainable_rate": sustainable,
        "minutes": rows,
        "cpu": cpu_model(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(
        f"{'PASS' if report['passed'] else 'FAIL'}: {errors} errors; RSS after minute 2 grew "
        f"{growth:+.1%} (limit {RSS_GROWTH_LIMIT:.0%}); wrote {output}"
    )
    return report
