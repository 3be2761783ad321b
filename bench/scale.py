"""`recserve bench scale`: import, training and serving at 10^4 to 10^6 items.

For each catalogue size, on a fresh embedded database (SQLite) in its own folder:

1. **Import.** A synthetic log with long-tail item popularity (Zipf) and sequential
   structure (items come in series of SERIES items; a user mostly moves to the next item
   of a series, otherwise to a popular item) is written straight to the database through
   the Feedback writer's bulk path: events/s.
2. **Training**, in a process of its own (``bench.scale_train``) so that its peak memory
   is its own: events stream from the database into the memory-mapped snapshot, the
   adaptive recipe picks the loss, and a fixed number of optimiser steps are timed:
   training events (targets) per second and peak RSS. The model is exported with an item
   index (calibrated on 2,000 users' states) and 1,000 other users' states are kept.
3. **Exact vs index**, in this process: one query at a time, exact scoring (a matrix
   product and argpartition over every item) against the faiss index, and the index's
   recall@10 against exact on the held-out states.
4. **Serving**: `recserve serve` as its own process with the bundle active, once scoring
   every item and once through the index; a closed loop of returning users (with 20%
   Feedback) at concurrency 8: p50, p99 and throughput.

The model is trained for a few hundred steps only: enough for structured embeddings, not
for quality (``recserve bench quality`` measures that). Prints a table, writes JSON.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest import cpu_model
from bench.serve_stage import activate_bundle
from shared.config import Settings
from shared.storage.engine import engine_for, migrate, session_scope

SERIES = 20
CHUNK = 50_000


@dataclass(frozen=True)
class Size:
    items: int
    users: int
    events: int


DEFAULT_SIZES: tuple[Size, ...] = (
    Size(10_000, 50_000, 1_000_000),
    Size(10_000, 200_000, 4_000_000),  # 4x the events at the same catalogue: RSS stays flat
    Size(100_000, 100_000, 2_000_000),
    Size(1_000_000, 200_000, 4_000_000),
)
"""About 11 million events in all (20 minutes on 2 cores). Larger runs: --sizes, e.g.
1e6:1e6:5e7 for a million users and 5x10^7 events."""


def generate(size: Size, seed: int = 0):  # type: ignore[no-untyped-def]
    """Yields lists of EventRow, user by user, each user's events in time order."""
    from shared.storage.ingest import EventRow

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, size.items + 1) ** 1.05
    cumulative = np.cumsum(weights[rng.permutation(size.items)])
    cumulative /= cumulative[-1]
    mean = size.events / size.users
    start = datetime(2026, 1, 1, tzinfo=UTC)
    user = 0
    chunk: list[Any] = []
    while user < size.users:
        block = min(1000, size.users - user)
        lengths = np.maximum(3, rng.geometric(1.0 / (mean - 2), size=block) + 2)
        longest = int(lengths.max())
        walk = np.empty((block, longest), dtype=np.int64)
        walk[:, 0] = np.searchsorted(cumulative, rng.random(block))
        for step in range(1, longest):
            popular = np.searchsorted(cumulative, rng.random(block))
            series_next = (walk[:, step - 1] // SERIES) * SERIES + (walk[:, step - 1] + 1) % SERIES
            follow = rng.random(block) < 0.6
            walk[:, step] = np.minimum(np.where(follow, series_next, popular), size.items - 1)
        for b in range(block):
            u = f"s{user + b}"
            for i in range(int(lengths[b])):
                chunk.append(
                    EventRow(
                        f"{u}-{i}",
                        u,
                        f"item{walk[b, i]}",
                        "click",
                        1.0,
                        start + timedelta(minutes=i),
                    )
                )
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        user += block
    if chunk:
        yield chunk


def import_events(settings: Settings, size: Size) -> dict[str, float]:
    from shared.storage.ingest import EventStore

    migrate(settings.db_url)
    engine = engine_for(settings)
    store = EventStore(engine)
    started, stored = time.perf_counter(), 0
    for chunk in generate(size):
        stored += len(store.store(chunk))
    store.close()
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"events": stored, "import_s": seconds, "import_events_per_s": stored / seconds}


def train_in_subprocess(settings: Settings, steps: int) -> dict[str, Any]:
    out = settings.data_dir / "train.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale_train",
            "--data-dir",
            str(settings.data_dir),
            "--steps",
            str(steps),
            "--output",
            str(out),
        ],
        check=True,
        env={**os.environ, "RECSERVE_DATA_DIR": str(settings.data_dir)},
    )
    return json.loads(out.read_text())


def exact_vs_index(bundle: Path, states: np.ndarray, repeats: int = 200) -> dict[str, float]:
    """Single-query latency of exact top-10 and of the index, and the index's recall."""
    from server.pipeline.rank import top_k
    from shared.model import bundle as bundle_format
    from shared.model.ann import ItemIndex, exact_top_k, recall_at

    loaded = bundle_format.load(bundle)
    table = loaded.item_embeddings
    index = ItemIndex.load(bundle)
    assert index is not None
    queries = states[:repeats]
    started = time.perf_counter()
    for state in queries:
        top_k(table @ state, 10)
    exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
    started = time.perf_counter()
    for state in queries:
        index.search(state[None], 10)
    index_ms = (time.perf_counter() - started) * 1000 / len(queries)
    found, _ = index.search(states, 10)
    return {
        "exact_ms": exact_ms,
        "index_ms": index_ms,
        "index_speedup": exact_ms / index_ms,
        "index_recall@10": recall_at(found, exact_top_k(table, states, 10)),
        "nlist": index.meta.nlist,
        "nprobe": index.meta.nprobe,
    }


def activate(settings: Settings, bundle: Path) -> None:
    from shared.model import bundle as bundle_format

    loaded = bundle_format.load(bundle)
    engine = engine_for(settings)
    with session_scope(engine) as session:
        activate_bundle(session, bundle, loaded, reason="recserve bench scale")
    engine.dispose()


def serve(settings: Settings, size: Size, *, use_index: bool, duration: float) -> dict[str, Any]:
    from bench.processes import ServerProcess
    from bench.serve_measure import measure, warm_histories

    users = [f"s{u}" for u in range(0, size.users, max(1, size.users // 2000))][:2000]
    items = [f"item{i}" for i in range(min(size.items, 10_000))]
    server = ServerProcess(
        settings,
        f"scale-{size.items}-{'index' if use_index else 'exact'}",
        {"use_item_index": str(use_index).lower(), "max_concurrent_rpcs": "64"},
    )
    try:
        warm_histories(server, users)
        return measure(server, "mixed", items, users, concurrency=8, clients=1, duration=duration)
    finally:
        server.stop()


def run_scale_bench(
    root: Path,
    *,
    sizes: tuple[Size, ...] = DEFAULT_SIZES,
    steps: int = 200,
    duration: float = 10.0,
    output: Path | None = None,
) -> dict[str, Any]:
    rows = []
    for size in sizes:
        settings = Settings(data_dir=root / f"scale-{size.items}-{size.users}-{size.events}")
        print(f"== {size.items:,} items, {size.users:,} users, {size.events:,} events")
        row: dict[str, Any] = {"items": size.items, "users": size.users}
        row.update(import_events(settings, size))
        print(f"imported {row['events']:,} events at {row['import_events_per_s']:,.0f}/s")
        trained = train_in_subprocess(settings, steps)
        row.update({k: v for k, v in trained.items() if k != "bundle"})
        bundle = Path(trained["bundle"])
        states = np.load(settings.data_dir / "heldout_states.npy")
        row.update(exact_vs_index(bundle, states))
        activate(settings, bundle)
        for use_index in (False, True):
            served = serve(settings, size, use_index=use_index, duration=duration)
            name = "index" if use_index else "exact"
            row[f"{name}_p50_ms"] = served["p50_ms"]
            row[f"{name}_p99_ms"] = served["p99_ms"]
            row[f"{name}_rps"] = served["throughput"]
        print(json.dumps(row, indent=1))
        rows.append(row)
    result = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": rows,
    }
    print_table(rows)
    if output:
        output.write_text(json.dumps(result, indent=2))
        print(f"wrote {output}")
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'items':>10} {'events':>10} {'import/s':>9} {'train ev/s':>10} {'RSS MB':>7} "
        f"{'exact ms':>8} {'index ms':>8} {'recall':>6} {'exact p50/p99':>14} {'rps':>5} "
        f"{'index p50/p99':>14} {'rps':>5}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['items']:>10,} {r['events']:>10,} {r['import_events_per_s']:>9,.0f} "
            f"{r['train_events_per_s']:>10,.0f} {r['peak_rss_mb']:>7,.0f} {r['exact_ms']:>8.2f} "
            f"{r['index_ms']:>8.3f} {r['index_recall@10']:>6.3f} "
            f"{r['exact_p50_ms']:>6.1f}/{r['exact_p99_ms']:<7.1f} {r['exact_rps']:>5.0f} "
            f"{r['index_p50_ms']:>6.1f}/{r['index_p99_ms']:<7.1f} {r['index_rps']:>5.0f}"
        )
