"""`recserve bench quality` (`make bench-quality`): quality as a user gets it.

Every step is the user's own, each a command or an RPC, so what is measured is what a
user gets from the defaults:

1. hold out each user's last event (users with at least two), and `recserve import` the
   rest (seq files as seq, every other format as CSV with its times);
2. `recserve train --wait` with no parameters (``--params`` passes experiments through
   the same door; the recipe fills everything not given, from the data);
3. `recserve serve`, exploration slots and re-ranking off (their defaults);
   (all in a fresh data folder under the one given, so that no earlier model competes)
4. a client asks Recommend (as RecommendBatch calls of 64 users) by user id for every
   user, k=20, and ranks the held-out event: HR@K and NDCG@K for K = 1, 5, 10, 20.

The protocol is full ranking with the user's seen items excluded: the server's default
(``allow_seen`` false), and the protocol of the SASRec+, gSASRec and HSTU tables.
Popularity, ranked the same way over the imported events, is the baseline. Prints a table
and writes JSON (bench-results/quality-<data>-seed<seed>.json by default).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ingest import cpu_model
from shared.config import Settings
from shared.storage.importers import guess_format, read_events

KS = (1, 5, 10, 20)
BATCH = 64


@dataclass
class HeldOut:
    """Each user's held-out last event, and what was imported before it."""

    targets: dict[str, str]
    seen: dict[str, set[str]]
    popularity: Counter[str]
    train_file: Path
    train_format: str
    events: int


def hold_out_last(data: Path, fmt: str | None, folder: Path) -> HeldOut:
    """Splits ``data``: each user's last event (by time, then file order) is held out;
    the others are written to a file `recserve import` reads."""
    fmt = fmt or guess_format(data)
    by_user: dict[str, list[tuple[float, int, str, str]]] = defaultdict(list)
    for line_no, parsed in read_events(data, fmt):
        if isinstance(parsed, str):
            raise ValueError(f"{data}:{line_no}: {parsed}")
        by_user[parsed.user_id].append(
            (parsed.event_time.timestamp(), line_no, parsed.item_id, parsed.kind)
        )
    folder.mkdir(parents=True, exist_ok=True)
    targets: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    popularity: Counter[str] = Counter()
    events = 0
    train_format = "seq" if fmt == "seq" else "csv"
    train_file = folder / f"{data.stem}-train.{'txt' if fmt == 'seq' else 'csv'}"
    with train_file.open("w") as out:
        if train_format == "csv":
            out.write("user,item,timestamp,kind\n")
        for user, rows in by_user.items():
            rows.sort()
            kept = rows[:-1] if len(rows) >= 2 else rows
            if len(rows) >= 2:
                targets[user] = rows[-1][2]
            seen[user] = {item for _, _, item, _ in kept}
            popularity.update(item for _, _, item, _ in kept)
            events += len(kept)
            for when, _, item, kind in kept:
                out.write(
                    f"{user} {item}\n"
                    if train_format == "seq"
                    else f"{user},{item},{when},{kind}\n"
                )
    return HeldOut(targets, seen, popularity, train_file, train_format, events)


def rank_metrics(ranks: list[int | None], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K and NDCG@K from each user's 1-based rank of the target (None: not in the list)."""
    n = len(ranks) or 1
    result: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r <= k]
        result[f"hr@{k}"] = len(hits) / n
        result[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 1) for r in hits) / n
    return result


def popularity_ranks(held: HeldOut, k: int) -> list[int | None]:
    order = [item for item, _ in held.popularity.most_common()]
    ranks: list[int | None] = []
    for user, target in held.targets.items():
        seen = held.seen.get(user, set())
        top = [item for item in order[: k + len(seen)] if item not in seen][:k]
        ranks.append(top.index(target) + 1 if target in top else None)
    return ranks


async def recommend_all(
    target: str, users: list[str], k: int
) -> tuple[dict[str, list[str]], Counter[str]]:
    """Recommend by user id for every user, as RecommendBatch calls of BATCH users: each
    user's list, and how many answers came from each source."""
    from shared.client import AsyncClient
    from shared.client.retry import retrying
    from shared.proto.recserve.v1 import recommender_pb2 as pb

    client = AsyncClient(target)
    lists: dict[str, list[str]] = {}
    sources: Counter[str] = Counter()
    try:
        for start in range(0, len(users), BATCH):
            chunk = users[start : start + BATCH]
            request = pb.RecommendBatchRequest(
                requests=[pb.RecommendRequest(user_id=u, k=k) for u in chunk]
            )

            async def ask(batch: pb.RecommendBatchRequest = request) -> Any:
                return await client.recommender.RecommendBatch(batch, timeout=60)

            answer = await retrying(ask, what="RecommendBatch")
            for user, response in zip(chunk, answer.responses, strict=True):
                lists[user] = [item.item_id for item in response.items]
                sources[pb.Source.Name(response.source)] += 1
    finally:
        await client.close()
    return lists, sources


async def served_ranks(target: str, held: HeldOut, k: int) -> tuple[list[int | None], Counter[str]]:
    """The rank of each user's held-out event in what Recommend returns for the user."""
    lists, sources = await recommend_all(target, list(held.targets), k)
    ranks: list[int | None] = []
    for user, wanted in held.targets.items():
        items = lists[user]
        ranks.append(items.index(wanted) + 1 if wanted in items else None)
    return ranks, sources


def run_recserve(
    args: list[str], env: dict[str, str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "recserve", *args], env=env, text=True, capture_output=True, **kwargs
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"recserve {' '.join(args)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done


def import_and_train(
    train_file: Path, train_format: str, env: dict[str, str], params: dict[str, Any]
) -> tuple[int, float, float]:
    """`recserve import` of the training file, then `recserve train --wait` with only
    ``params``: (the job's id, import seconds, training wall seconds)."""
    started = time.perf_counter()
    imported = run_recserve(["import", str(train_file), "--format", train_format], env)
    import_s = time.perf_counter() - started
    print(imported.stdout.strip().splitlines()[0] if imported.stdout.strip() else "imported")
    train_args = ["train", "--wait"] + (["--params", json.dumps(params)] if params else [])
    started = time.perf_counter()
    trained = run_recserve(train_args, env)
    train_wall = time.perf_counter() - started
    job_id = int(trained.stdout.split("queued train job ")[1].split()[0])
    return job_id, import_s, train_wall


def serve_trained(target: str, job_id: int) -> tuple[Any, str]:
    """The job's model details; the model activated as an operator would if the job did
    not promote it (it did not beat what was active, or popularity), with the job's last
    log line saying why, which the result reports."""
    from shared.client import Client
    from shared.proto.recserve.v1 import admin_pb2

    activated = ""
    client = Client(target)
    try:
        job = client.admin.GetJob(admin_pb2.GetJobRequest(id=job_id), timeout=30)
        listing = client.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=30)
        if listing.active_version != job.model_version:
            activated = job.log[-1] if job.log else ""
            request = admin_pb2.ActivateModelRequest(version=job.model_version)
            client.admin.ActivateModel(request, timeout=120)
        details = client.admin.GetModelDetails(
            admin_pb2.GetModelRequest(version=job.model_version), timeout=30
        )
    finally:
        client.close()
    return details, activated


@contextmanager
def serving(env: dict[str, str], job_id: int) -> Iterator[tuple[str, Any]]:
    """`recserve serve` (exploration slots and re-ranking off) on the job's model,
    activated if the job did not promote it: (its address, the model's details)."""
    from bench.processes import free_port
    from shared.client import wait_serving

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "recserve", "serve", "--port", str(port)],
        env={
            **env,
            "RECSERVE_SERVER__EXPLORATION_SLOTS": "0",
            "RECSERVE_SERVER__POPULARITY_DEBIAS": "0",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        alive = lambda: server.poll() is None  # noqa: E731
        if not wait_serving(target, timeout=300, alive=alive, require_model=False):
            raise RuntimeError("recserve serve did not come up")
        details = serve_trained(target, job_id)
        if not wait_serving(target, timeout=120, alive=alive):
            raise RuntimeError("recserve serve did not load the trained model")
        yield target, details
    finally:
        server.terminate()
        server.wait(timeout=60)


def rank_through_server(
    env: dict[str, str], job_id: int, held: HeldOut
) -> tuple[Any, str, Any, Any, float]:
    """`recserve serve` on the trained model, and every held-out user asked by id:
    (model details, activation note, ranks, their sources, seconds)."""
    with serving(env, job_id) as (target, (details, activated)):
        started = time.perf_counter()
        ranks, sources = asyncio.run(served_ranks(target, held, max(KS)))
        serve_s = time.perf_counter() - started
    return details, activated, ranks, sources, serve_s


def run_quality_bench(
    settings: Settings,
    data: Path,
    *,
    fmt: str | None,
    params: dict[str, Any],
    output: Path | None,
) -> dict[str, Any]:
    # A fresh folder per run: a model left by an earlier run would compete for activation.
    folder = Path(settings.data_dir) / time.strftime("run-%Y%m%d-%H%M%S")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSERVE_TRAINING__")}
    env.update({"RECSERVE_DATA_DIR": str(folder), "RECSERVE_TELEMETRY__METRICS_PORT": "0"})
    held = hold_out_last(data, fmt, folder / "bench-input")
    print(
        f"{data}: {len(held.seen):,} users; holding out {len(held.targets):,} last events, "
        f"importing {held.events:,}",
        flush=True,
    )
    job_id, import_s, train_wall = import_and_train(held.train_file, held.train_format, env, params)
    details, activated, ranks, sources, serve_s = rank_through_server(env, job_id, held)
    metrics = details.model.metrics
    resolved = {c.name: (json.loads(c.value_json), c.source) for c in details.training}
    result: dict[str, Any] = {
        "data": str(data),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "given": params,
        "seed": resolved.get("seed", (42, ""))[0],
        "version": details.model.version,
        "resolved": {name: {"value": v, "source": s} for name, (v, s) in resolved.items()},
        "users": len(held.targets),
        "items": len(held.popularity),
        "epochs": int(metrics.get("epochs", 0)),
        "best_epoch": int(metrics.get("best_epoch", 0)),
        "train_seconds": metrics.get("train_seconds", 0.0),
        "job_wall_seconds": train_wall,
        "import_seconds": import_s,
        "recommend_seconds": serve_s,
        "sources": dict(sources),
        "model": rank_metrics(ranks),
        "popularity": rank_metrics(popularity_ranks(held, max(KS))),
        "internal_ndcg@10": metrics.get("ndcg@10", 0.0),
        "activated_by_the_bench": activated,
        "machine": {"platform": platform.platform()},
    }
    print_quality_table(result)
    out = output or Path("bench-results") / f"quality-{data.stem}-seed{result['seed']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out}")
    return result


def print_quality_table(result: dict[str, Any]) -> None:
    model, pop = result["model"], result["popularity"]
    print(
        f"\n{result['data']} ({result['cpu']}, {result['date']}): {result['users']:,} users, "
        f"{result['items']:,} items; seed {result['seed']}; {result['epochs']} epochs (best "
        f"{result['best_epoch']}), train {result['train_seconds']:.0f}s, job "
        f"{result['job_wall_seconds']:.0f}s"
    )
    if result["activated_by_the_bench"]:
        print(f"not promoted by the job ({result['activated_by_the_bench']}); activated to measure")
    chosen = {
        n: c["value"] for n, c in sorted(result["resolved"].items()) if c["source"] == "recipe"
    }
    if chosen:
        print(f"given: {json.dumps(result['given'])}; the recipe chose:")
        for name, value in chosen.items():
            print(f"  {name} = {value}")
    else:
        print(f"given: {json.dumps(result['given'])}; the recipe chose nothing (settings or given)")
    print(f"\n{'metric':<10}{'served model':>14}{'popularity':>12}")
    for k in KS:
        for kind in ("hr", "ndcg"):
            name = f"{kind}@{k}"
            print(f"{name:<10}{model[name]:>14.4f}{pop[name]:>12.4f}")
    print("(full ranking over the catalogue, the user's imported items excluded)")
