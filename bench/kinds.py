"""`recserve bench kinds`: do event types pay, on a log with real ratings and times?

On a rated log (ml-100k's ``.inter``: user, item, rating, time), through the user's path
(`recserve import`, `recserve train --wait`, `recserve serve`, Recommend by user id):

- a rating of 4 or 5 is a **like**, 3 a **view**, 1 or 2 a **dislike**;
- each user's last like by time is the target; it and everything after it are held
  out, the rest imported as events of kind ``rating`` with the rating as their value;
- two arms, each with its own data folder, import, training and server:
  - **kinds**: the ratings table (``RECSERVE_EVENTS__RATINGS``): likes positive with
    weight 1.0, views positive with weight VIEW_WEIGHT (the kind table's example weight
    of a view), dislikes negative (never a target, left out of the input, never
    recommended to that user);
  - **all positive**: no table, every event a positive of weight 1.0 (as before event
    types existed);
- per arm and seed: HR@10 and NDCG@10 of the target (full ranking, the user's imported
  items excluded), and the share of the recommended items (k = 10) that the user rated
  1 or 2 at any time, before the target or after it.

Both arms train with the same parameters (``--params``; by default the recipe under a
time budget of DEFAULT_BUDGET_S, so that four runs fit in half an hour on 2 cores).
Prints a table and writes JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ingest import cpu_model
from bench.quality import import_and_train, rank_metrics, recommend_all, serving
from shared.storage.importers import guess_format, read_events

LIKE, DISLIKE = 4.0, 2.0
"""A rating >= LIKE is a like, <= DISLIKE a dislike, anything between a view."""
VIEW_WEIGHT = 0.1
DEFAULT_BUDGET_S = 180.0
K = 10
ARMS = {
    "kinds": json.dumps(
        [
            {"low": LIKE, "high": 10.0},
            {"low": DISLIKE + 1e-9, "high": LIKE - 1e-9, "weight": VIEW_WEIGHT},
            {"low": -10.0, "high": DISLIKE, "role": "negative"},
        ]
    ),
    "all positive": "[]",
}


@dataclass
class RatedSplit:
    targets: dict[str, str]
    disliked: dict[str, set[str]]
    """Per user, every item they rated <= DISLIKE at any time."""
    train_file: Path
    events: int
    held_out: int


def split_on_last_like(data: Path, folder: Path) -> RatedSplit:
    """Each user's last like by time (then file order) is the target; the user's events
    before it go to a CSV (user, item, timestamp, kind, value) for `recserve import`."""
    rows: dict[str, list[tuple[float, int, str, float]]] = defaultdict(list)
    for line_no, parsed in read_events(data, guess_format(data)):
        if isinstance(parsed, str):
            raise ValueError(f"{data}:{line_no}: {parsed}")
        rows[parsed.user_id].append(
            (parsed.event_time.timestamp(), line_no, parsed.item_id, parsed.value)
        )
    folder.mkdir(parents=True, exist_ok=True)
    train_file = folder / f"{data.stem}-before-last-like.csv"
    targets: dict[str, str] = {}
    disliked: dict[str, set[str]] = {}
    events = held_out = 0
    with train_file.open("w") as out:
        out.write("user,item,timestamp,kind,value\n")
        for user, events_of in rows.items():
            events_of.sort()
            disliked[user] = {item for _, _, item, rating in events_of if rating <= DISLIKE}
            likes = [n for n, (_, _, _, rating) in enumerate(events_of) if rating >= LIKE]
            cut = likes[-1] if likes and likes[-1] > 0 else len(events_of)
            if cut < len(events_of):
                targets[user] = events_of[cut][2]
            held_out += len(events_of) - cut
            for when, _, item, rating in events_of[:cut]:
                out.write(f"{user},{item},{when},rating,{rating}\n")
                events += 1
    return RatedSplit(targets, disliked, train_file, events, held_out)


def measure_arm(split: RatedSplit, env: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
    """One arm and seed: import, train, serve, ask; its figures."""
    job_id, _, train_wall = import_and_train(split.train_file, "csv", env, params)
    with serving(env, job_id) as (target, (details, _)):
        lists, _ = asyncio.run(recommend_all(target, list(split.targets), K))
    ranks: list[int | None] = []
    shown = bad = 0
    for user, wanted in split.targets.items():
        items = lists.get(user, [])
        ranks.append(items.index(wanted) + 1 if wanted in items else None)
        shown += len(items)
        bad += sum(1 for item in items if item in split.disliked.get(user, ()))
    metrics = details.model.metrics
    return {
        **rank_metrics(ranks, (K,)),
        "disliked_share": bad / shown if shown else 0.0,
        "recommended": shown,
        "epochs": int(metrics.get("epochs", 0)),
        "train_seconds": metrics.get("train_seconds", 0.0),
        "job_wall_seconds": train_wall,
    }


def run_kinds_bench(
    data: Path,
    data_dir: Path,
    *,
    seeds: list[int],
    params: dict[str, Any],
    output: Path | None,
) -> dict[str, Any]:
    folder = data_dir / time.strftime("kinds-%Y%m%d-%H%M%S")
    split = split_on_last_like(data, folder / "bench-input")
    given = params or {"time_budget_s": DEFAULT_BUDGET_S}
    print(
        f"{data}: {len(split.targets):,} users with a last like; importing {split.events:,} "
        f"events before it, holding out {split.held_out:,}",
        flush=True,
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECSERVE_TRAINING__", "RECSERVE_EVENTS__"))
    }
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        for arm, ratings in ARMS.items():
            run = folder / f"{arm.replace(' ', '-')}-seed{seed}"
            env = {
                **base,
                "RECSERVE_DATA_DIR": str(run),
                "RECSERVE_TELEMETRY__METRICS_PORT": "0",
                "RECSERVE_EVENTS__RATINGS": ratings,
            }
            row = measure_arm(split, env, {**given, "seed": seed})
            row["seed"] = seed
            runs[arm].append(row)
            print(
                f"  {arm:<13} seed {seed:>3}: HR@{K} {row[f'hr@{K}']:.4f}  NDCG@{K} "
                f"{row[f'ndcg@{K}']:.4f}  disliked {row['disliked_share']:.4f}  "
                f"({row['epochs']} epochs, {row['train_seconds']:.0f} s)",
                flush=True,
            )
    result = summary(data, given, len(split.targets), runs)
    print_kinds_table(result)
    out = output or Path("bench-results") / f"kinds-{data.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return result


def summary(
    data: Path, given: dict[str, Any], users: int, runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The runs with their machine, and each arm's mean over the seeds."""
    keys = (f"hr@{K}", f"ndcg@{K}", "disliked_share")
    return {
        "data": str(data),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "given": given,
        "users": users,
        "view_weight": VIEW_WEIGHT,
        "runs": runs,
        "mean": {
            arm: {key: statistics.fmean(r[key] for r in rows) for key in keys}
            for arm, rows in runs.items()
        },
    }


def print_kinds_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['data']} ({result['cpu']}, {result['date']}): {result['users']:,} users; "
        f"given {json.dumps(result['given'])}"
    )
    print(f"{'arm':<14}{'seed':>6}{f'HR@{K}':>10}{f'NDCG@{K}':>10}{'disliked':>10}")
    for arm, rows in result["runs"].items():
        for row in rows:
            print(
                f"{arm:<14}{row['seed']:>6}{row[f'hr@{K}']:>10.4f}{row[f'ndcg@{K}']:>10.4f}"
                f"{row['disliked_share']:>10.4f}"
            )
        mean = result["mean"][arm]
        print(
            f"{arm:<14}{'mean':>6}{mean[f'hr@{K}']:>10.4f}{mean[f'ndcg@{K}']:>10.4f}"
            f"{mean['disliked_share']:>10.4f}"
        )
    print(f"(disliked: the share of the {K} recommended items that the user rated 1 or 2)")
