"""`recserve bench similar`: is a user's next item among the items most similar to their
last one? SimilarItems, through a running `recserve serve`, against item co-occurrence.

The protocol: from the interaction file, each user's last event (by time) is the target
and the one before it the query. The model is the one a quality run trained on that same
split (`recserve bench quality` leaves its data folder: pass it as --data-dir), so no
target was seen in training. For every user, SimilarItems(query, k=10) is asked over
gRPC, and the target's rank in the answer gives HR@10 and NDCG@10.

The served SimilarItems blends the model with the training transitions; the same server
with server.similar_transitions off gives the model alone. The baseline ranks, for the
same query, the items that most often came right after it
in the training histories of every user (item-to-item co-occurrence, the classic "also
viewed"). Neither excludes the user's seen items: the question is about the item, not the
user. Prints a table and writes JSON (bench-results/similar-<data>.json by default).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.quality import rank_metrics
from shared.storage.importers import guess_format, read_events

K = 10
CONCURRENCY = 16


def queries_and_transitions(
    data: Path, fmt: str | None
) -> tuple[dict[str, tuple[str, str]], dict[str, Counter[str]]]:
    """{user: (query item, target item)} and {item: Counter(next items)} over every
    user's events but the last."""
    by_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for line_no, parsed in read_events(data, fmt or guess_format(data)):
        if isinstance(parsed, str):
            raise ValueError(f"{data}:{line_no}: {parsed}")
        by_user[parsed.user_id].append((parsed.event_time.timestamp(), line_no, parsed.item_id))
    pairs: dict[str, tuple[str, str]] = {}
    following: dict[str, Counter[str]] = defaultdict(Counter)
    for user, rows in by_user.items():
        rows.sort()
        items = [item for _, _, item in rows]
        if len(items) < 3:
            continue
        pairs[user] = (items[-2], items[-1])
        for before, after in zip(items[:-2], items[1:-1], strict=True):
            if before != after:
                following[before][after] += 1
    return pairs, following


def cooccurrence_ranks(
    pairs: dict[str, tuple[str, str]], following: dict[str, Counter[str]]
) -> list[int | None]:
    ranks: list[int | None] = []
    for query, target in pairs.values():
        top = [item for item, _ in following.get(query, Counter()).most_common(K)]
        ranks.append(top.index(target) + 1 if target in top else None)
    return ranks


async def similar_ranks(target: str, pairs: dict[str, tuple[str, str]]) -> tuple[Any, float]:
    """Each user's target rank in SimilarItems(query), CONCURRENCY calls at a time."""
    import grpc

    from shared.client import AsyncClient
    from shared.proto.recserve.v1 import recommender_pb2 as pb

    client = AsyncClient(target)
    ranks: list[int | None] = []
    unknown = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def ask(query: str, wanted: str) -> None:
        nonlocal unknown
        async with gate:
            try:
                answer = await client.recommender.SimilarItems(
                    pb.SimilarItemsRequest(item_ids=[query], k=K), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                unknown += 1
                ranks.append(None)
                return
        items = [item.item_id for item in answer.items]
        ranks.append(items.index(wanted) + 1 if wanted in items else None)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(ask(query, wanted) for query, wanted in pairs.values()))
    finally:
        await client.close()
    return (ranks, unknown), time.perf_counter() - started


def served_ranks(
    data_dir: Path, pairs: dict[str, tuple[str, str]], *, transitions: bool
) -> tuple[tuple[list[int | None], int], float]:
    """The ranks from SimilarItems of a `recserve serve` on ``data_dir``, with the
    training transitions blended in or the model alone (server.similar_transitions)."""
    from bench.processes import free_port
    from shared.client import wait_serving

    port = free_port()
    env = {
        **os.environ,
        "RECSERVE_DATA_DIR": str(data_dir),
        "RECSERVE_TELEMETRY__METRICS_PORT": "0",
        "RECSERVE_SERVER__SIMILAR_TRANSITIONS": str(transitions).lower(),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "recserve", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    target = f"127.0.0.1:{port}"
    try:
        if not wait_serving(target, timeout=300, alive=lambda: server.poll() is None):
            raise RuntimeError(f"recserve serve on {data_dir} did not load a model")
        return asyncio.run(similar_ranks(target, pairs))
    finally:
        server.terminate()
        server.wait(timeout=60)


ARMS = {
    "similar_items": "SimilarItems (served: model + transitions)",
    "model_alone": "SimilarItems, model alone",
    "cooccurrence": "co-occurrence",
}


def run_similar_bench(
    data: Path, data_dir: Path, *, fmt: str | None, output: Path | None
) -> dict[str, Any]:
    from bench.ingest import cpu_model

    pairs, following = queries_and_transitions(data, fmt)
    (ranks, unknown), seconds = served_ranks(data_dir, pairs, transitions=True)
    (alone, _), _ = served_ranks(data_dir, pairs, transitions=False)
    result: dict[str, Any] = {
        "data": str(data),
        "data_dir": str(data_dir),
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "users": len(pairs),
        "unknown_queries": unknown,
        "similar_items": rank_metrics(ranks, (1, 5, 10)),
        "model_alone": rank_metrics(alone, (1, 5, 10)),
        "cooccurrence": rank_metrics(cooccurrence_ranks(pairs, following), (1, 5, 10)),
        "seconds": seconds,
    }
    print(f"{data}: {len(pairs):,} users, the last item from the one before it (k={K})")
    print(f"\n{'arm':<46}{'hr@10':>8}{'ndcg@10':>9}{'hr@1':>8}")
    for arm, label in ARMS.items():
        row = result[arm]
        print(f"{label:<46}{row['hr@10']:>8.4f}{row['ndcg@10']:>9.4f}{row['hr@1']:>8.4f}")
    out = output or Path("bench-results") / f"similar-{data.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"\nwrote {out} ({seconds:.0f} s of SimilarItems calls, {unknown} unknown queries)")
    return result
