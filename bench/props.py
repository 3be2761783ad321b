"""`recserve bench props`: what item properties cost serving, on the user's path.

Two `recserve serve` processes, each with its own data folder, database and ML-1M-sized
model with random weights (bench/serve_stage.py): **id only** (the serving benchmarks'
model) and **properties** (the same architecture with an item-property embedding, and
every item carrying MovieLens-like properties: one to three of 18 genres and a year, so
each item has 3-4 tokens that the model averages into every history event's and every
scored item's vector). Both hold the same stored histories.

For --rounds rounds (default 3), at each level of --levels (default 8): cold traffic
(inline histories the servers never saw), then mixed (returning users, a fifth of the
requests preceded by a Feedback), each measured on id only and then on properties for
--duration seconds. The medians per side, and properties over id only, go to a table and
to JSON (one file per traffic and level: ``<output stem>-cold-c8.json``, ``-mixed-c8.json``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from bench.interleaved import report
from bench.processes import ServerProcess
from bench.serve_measure import measure, warm_histories
from bench.serve_stage import prepare, random_bundle
from shared.model.properties import Properties

GENRES = 18
DEFAULT_LEVEL = 8


def movie_like_properties(items: list[str]) -> dict[str, Properties]:
    """One to three genres and a year (1930..2000) per item, seeded."""
    rng = random.Random(0)
    return {
        item: {
            "genre": [f"g{g}" for g in rng.sample(range(GENRES), rng.randint(1, 3))],
            "year": float(rng.randint(1930, 2000)),
        }
        for item in items
    }


def interleaved(
    servers: dict[str, ServerProcess],
    items: list[str],
    users: list[str],
    *,
    level: int,
    rounds: int,
    duration: float,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """traffic -> side -> one row per round."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {
        traffic: {name: [] for name in servers} for traffic in ("cold", "mixed")
    }
    for _ in range(rounds):
        for traffic, sides in rows.items():
            for name, server in servers.items():
                row = measure(
                    server, traffic, items, users, concurrency=level, clients=2,
                    duration=duration,
                )  # fmt: skip
                sides[name].append(row)
                print(
                    f"{traffic:>5} {name:>10}: {row['throughput']:8.1f} req/s  "
                    f"p99 {row['p99_ms']:6.2f} ms  errors {sum(row['errors'].values())}",
                    flush=True,
                )
    return rows


def run_props_bench(
    data_dir: Path, levels: list[int], *, rounds: int, duration: float, output: Path
) -> dict[str, Any]:
    """The table and JSON of the module docstring; returns traffic@level -> report."""
    settings_id, items, users = prepare(data_dir / "id-only", None)
    bundle = data_dir / "properties" / "models" / "bench-properties"
    random_bundle(bundle, movie_like_properties(items))
    settings_props, _, _ = prepare(data_dir / "properties", bundle)
    servers = {
        "id only": ServerProcess(settings_id, "id-only", {}),
        "properties": ServerProcess(settings_props, "properties", {}),
    }
    results: dict[str, Any] = {}
    try:
        for server in servers.values():
            warm_histories(server, users)
        for level in levels:
            rows = interleaved(servers, items, users, level=level, rounds=rounds, duration=duration)
            for traffic, sides in rows.items():
                errors = sum(sum(r["errors"].values()) for found in sides.values() for r in found)
                results[f"{traffic}@{level}"] = report(
                    sides, baseline="id only", candidate="properties",
                    title=f"{traffic}: properties / id only", level=level, duration=duration,
                    output=output.with_name(f"{output.stem}-{traffic}-c{level}.json"),
                    errors=errors,
                )  # fmt: skip
    finally:
        for server in servers.values():
            server.stop()
    return results
