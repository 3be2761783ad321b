"""`recserve bench cold`: how a model with item properties ranks items it never trained on.

The protocol, on a `user item` log (ML-1M) and its item metadata (`movies.dat`, genres
and year, through `--item-map`):

- COLD_SHARE of the items with at least MIN_EVENTS events are held out of training, at
  random (a fixed split seed): every event on them is removed from what training sees,
  histories included;
- each user's last event is the target; the events before it are imported (each with
  its position in minutes as its time), those on held-out items only after the model is trained,
  so they are in the histories the server reads but never in training;
- two arms, each with its own data folder, through the user's path: **properties**
  (`recserve import-items` first, so training learns from them and the server takes the
  held-out items on through the item encoder) and **id only** (no metadata: the
  held-out items cannot be ranked at all);
- Recommend (k = 10, full catalogue, the user's items excluded) for every user; HR@10
  and NDCG@10 over the users whose target is a held-out item (cold) and the others
  (warm); beside them, computed here: **random** ranking (its expectation) and a
  **content** baseline, the cosine between the user's genre profile (the genres of
  their history) and each item's genres.

Both arms train with the same parameters (``--params``; by default the recipe with a
time budget of DEFAULT_BUDGET_S). Prints a table and writes JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest import cpu_model
from bench.quality import import_and_train, rank_metrics, recommend_all, run_recserve, serving

COLD_SHARE = 0.1
MIN_EVENTS = 5
SPLIT_SEED = 0
DEFAULT_BUDGET_S = 900.0
K = 10
ARMS = ("properties", "id only")
T0 = 946_684_800
"""2000-01-01: a user's n-th event is imported at T0 + n * STEP_S."""
STEP_S = 60
"""One event a minute: a person's pace. Events a second apart would make every user with
more than 30 events a suspected bot to the importer (shared/storage/importers.py), and
training would leave them out."""


@dataclass
class ColdSplit:
    cold: set[str]
    targets: dict[str, str]
    history: dict[str, list[str]]
    """Each user's events before the target, in order (held-out items included)."""
    train_file: Path
    later_file: Path
    """The events on held-out items, imported once the model is trained."""


def split_cold(data: Path, folder: Path) -> ColdSplit:
    sequences: dict[str, list[str]] = defaultdict(list)
    with data.open() as handle:
        for line in handle:
            user, item = line.split()
            sequences[user].append(item)
    counts = Counter(item for items in sequences.values() for item in items)
    eligible = sorted(item for item, n in counts.items() if n >= MIN_EVENTS)
    cold = set(random.Random(SPLIT_SEED).sample(eligible, round(COLD_SHARE * len(eligible))))
    folder.mkdir(parents=True, exist_ok=True)
    train_file, later_file = folder / "train.csv", folder / "later.csv"
    targets: dict[str, str] = {}
    history: dict[str, list[str]] = {}
    with train_file.open("w") as train, later_file.open("w") as later:
        for out in (train, later):
            out.write("user,item,timestamp\n")
        for user, items in sequences.items():
            if len(items) < 2:
                continue
            targets[user], history[user] = items[-1], items[:-1]
            for position, item in enumerate(items[:-1]):
                out = later if item in cold else train
                out.write(f"{user},{item},{T0 + position * STEP_S}\n")
    return ColdSplit(cold, targets, history, train_file, later_file)


def genres_of(movies: Path, item_map: Path) -> dict[str, set[str]]:
    """Each item's genres (movies.dat, its ids mapped to the log's)."""
    ours = {}
    for line in item_map.read_text().splitlines():
        if line.strip():
            mine, original = line.split()
            ours[original] = mine
    genres: dict[str, set[str]] = {}
    for line in movies.read_text(encoding="latin-1").splitlines():
        movie, _, classes = line.split("::")
        if movie in ours:
            genres[ours[movie]] = set(classes.split("|"))
    return genres


def baselines(split: ColdSplit, genres: dict[str, set[str]]) -> dict[str, dict[str, float]]:
    """Random ranking's expectation and the genre-profile cosine, cold and warm."""
    items = sorted({*genres, *split.targets.values()})
    names = sorted({g for gs in genres.values() for g in gs})
    column = {g: n for n, g in enumerate(names)}
    matrix = np.zeros((len(items), len(names)), np.float32)
    for row, item in enumerate(items):
        for g in genres.get(item, ()):
            matrix[row, column[g]] = 1.0
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
    index = {item: row for row, item in enumerate(items)}
    ranks: dict[str, list[int | None]] = {"cold": [], "warm": []}
    chance: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
    discount = sum(1.0 / math.log2(r + 1) for r in range(1, K + 1))
    for user, target in split.targets.items():
        group = "cold" if target in split.cold else "warm"
        seen = sorted({index[i] for i in split.history[user] if i in index})
        scores = matrix @ matrix[seen].sum(axis=0)
        scores[seen] = -np.inf
        order = np.argsort(-scores, kind="stable")[:K].tolist()
        wanted = index[target]
        ranks[group].append(order.index(wanted) + 1 if wanted in order else None)
        candidates = len(items) - len(seen)  # random: each place holds the target at 1/n
        chance[group].append((min(K, candidates) / candidates, discount / candidates))
    result = {f"content {g}": rank_metrics(r, (K,)) for g, r in ranks.items()}
    for group, pairs in chance.items():
        result[f"random {group}"] = {
            f"hr@{K}": float(np.mean([hr for hr, _ in pairs])) if pairs else 0.0,
            f"ndcg@{K}": float(np.mean([ndcg for _, ndcg in pairs])) if pairs else 0.0,
        }
    return result


def measure_arm(
    split: ColdSplit, env: dict[str, str], params: dict[str, Any], items: tuple[Path, Path] | None
) -> dict[str, Any]:
    """One arm and seed through the user's path: its figures, cold and warm."""
    if items is not None:
        run_recserve(["import-items", str(items[0]), "--item-map", str(items[1])], env)
    job_id, _, _ = import_and_train(split.train_file, "csv", env, params)
    run_recserve(["import", str(split.later_file), "--format", "csv"], env)
    with serving(env, job_id) as (target, (details, _)):
        if items is not None:
            asyncio.run(_taken_on(target, sorted(split.cold)[0]))
        lists, _ = asyncio.run(recommend_all(target, list(split.targets), K))
    ranks: dict[str, list[int | None]] = {"cold": [], "warm": []}
    for user, wanted in split.targets.items():
        found = lists.get(user, [])
        group = "cold" if wanted in split.cold else "warm"
        ranks[group].append(found.index(wanted) + 1 if wanted in found else None)
    metrics = details.model.metrics
    return {
        **{group: rank_metrics(r, (K,)) for group, r in ranks.items()},
        "users": {group: len(r) for group, r in ranks.items()},
        "epochs": int(metrics.get("epochs", 0)),
        "train_seconds": metrics.get("train_seconds", 0.0),
    }


async def _taken_on(target: str, item: str, timeout: float = 120.0) -> None:
    """Waits until the served model has taken on the held-out ``item``."""
    from shared.client import AsyncClient
    from shared.proto.recserve.v1 import admin_pb2

    client = AsyncClient(target)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            listed = await client.admin.ListItems(
                admin_pb2.ListItemsRequest(item_ids=[item]), timeout=10
            )
            if listed.items and listed.items[0].in_model:
                return
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    raise RuntimeError(f"the served model did not take on held-out item {item} in {timeout}s")


def run_cold_bench(
    data: Path,
    items: tuple[Path, Path],
    data_dir: Path,
    *,
    seeds: list[int],
    params: dict[str, Any],
    output: Path | None,
    arms: tuple[str, ...] = ARMS,
) -> dict[str, Any]:
    folder = data_dir / time.strftime("cold-%Y%m%d-%H%M%S")
    split = split_cold(data, folder / "bench-input")
    given = params or {"time_budget_s": DEFAULT_BUDGET_S}
    cold_users = sum(t in split.cold for t in split.targets.values())
    print(
        f"{data}: {len(split.cold):,} items held out of training; {len(split.targets):,} users, "
        f"{cold_users:,} of them with a held-out target",
        flush=True,
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_TRAINING__")}
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm in runs:
            env = {
                **base,
                "RECSERVE_DATA_DIR": str(folder / f"{arm.replace(' ', '-')}-seed{seed}"),
                "RECSERVE_TELEMETRY__METRICS_PORT": "0",
            }
            row = measure_arm(
                split, env, {**given, "seed": seed}, items if arm == "properties" else None
            )
            row["seed"] = seed
            runs[arm].append(row)
            print(
                f"  {arm:<11} seed {seed:>3}: cold HR@{K} {row['cold'][f'hr@{K}']:.4f} NDCG@{K} "
                f"{row['cold'][f'ndcg@{K}']:.4f} | warm HR@{K} {row['warm'][f'hr@{K}']:.4f} "
                f"NDCG@{K} {row['warm'][f'ndcg@{K}']:.4f} ({row['epochs']} epochs)",
                flush=True,
            )
    result = {
        "data": str(data),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "given": given,
        "held_out_items": len(split.cold),
        "users": len(split.targets),
        "cold_users": cold_users,
        "runs": runs,
        "baselines": baselines(split, genres_of(*items)),
    }
    print_cold_table(result)
    out = output or Path("bench-results") / f"cold-{data.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return result


def print_cold_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['data']} ({result['cpu']}, {result['date']}): {result['held_out_items']:,} "
        f"items held out; {result['cold_users']:,} cold and "
        f"{result['users'] - result['cold_users']:,} warm targets; "
        f"given {json.dumps(result['given'])}"
    )
    print(f"{'ranking':<22}{'cold HR':>9}{'cold NDCG':>11}{'warm HR':>9}{'warm NDCG':>11}")
    for arm, rows in result["runs"].items():
        for row in rows:
            print(
                f"{arm + ' seed ' + str(row['seed']):<22}{row['cold'][f'hr@{K}']:>9.4f}"
                f"{row['cold'][f'ndcg@{K}']:>11.4f}{row['warm'][f'hr@{K}']:>9.4f}"
                f"{row['warm'][f'ndcg@{K}']:>11.4f}"
            )
    lines = result["baselines"]
    for name in ("content", "random"):
        cold, warm = lines[f"{name} cold"], lines[f"{name} warm"]
        print(
            f"{name:<22}{cold[f'hr@{K}']:>9.4f}{cold[f'ndcg@{K}']:>11.4f}"
            f"{warm[f'hr@{K}']:>9.4f}{warm[f'ndcg@{K}']:>11.4f}"
        )
    print(f"(@{K}: full catalogue, the user's items excluded)")
