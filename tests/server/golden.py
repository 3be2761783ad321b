"""A fixed model, catalogue and set of requests whose answers are recorded once and replayed
by tests/server/test_golden.py: the request path may be rebuilt, but what it answers may
not change, except where a listed fix changes it.

The model is a SASRec of random weights from a fixed seed (no training: nothing varies
between runs), exported like any bundle; the data is a small synthetic log; the catalogue
has topic labels, a "sale" label on some items and one unavailable item.

    python -m tests.server.golden      # records tests/server/golden_answers.json
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shared import synthetic
from shared.config import ServerSettings, Settings
from shared.storage import event_store, item_store, model_store
from shared.storage.engine import make_engine, migrate, session_scope
from shared.storage.tables import FeedbackEventCreate, Item, ModelStatus, ModelVersion
from tests.support.waits import eventually

ANSWERS = Path(__file__).with_name("golden_answers.json")
SPEC = synthetic.SyntheticSpec(n_users=60, n_topics=5, items_per_topic=8, seed=21)
UNAVAILABLE = "i001-002"
ON_SALE = {"i000-003", "i002-001", "i003-004", "i004-000"}


def build(folder: Path, *, with_model: bool = True) -> Settings:
    """A data folder with the log, the catalogue and (unless not ``with_model``) the fixed
    random-weight model active as version 1."""
    settings = Settings(
        data_dir=folder,
        server=ServerSettings(
            port=0, model_poll_s=0.2, intra_op_threads=1, drain_s=0, max_concurrent_rpcs=1000,
            max_queue_wait_ms=0, log_impressions=False,
        ),
    )  # fmt: skip
    migrate(settings.db_url)
    engine = make_engine(settings.db_url)
    events = list(synthetic.events(SPEC))
    with session_scope(engine) as session:
        event_store.insert_events(
            session,
            events=[
                FeedbackEventCreate(
                    event_id=e.event_id, user_id=e.user_id, item_id=e.item_id, kind=e.kind,
                    value=e.value, event_time=datetime.fromtimestamp(e.timestamp_ms / 1000, UTC),
                )
                for e in events
            ],
        )  # fmt: skip
        item_store.upsert_items(
            session,
            items=[
                Item(
                    item_id=i.item_id,
                    title=i.title,
                    labels=[*i.labels, *(["sale"] if i.item_id in ON_SALE else [])],
                    available=i.item_id != UNAVAILABLE,
                )
                for i in synthetic.catalogue(SPEC)
            ],
        )
    if with_model:
        _register_model(settings, engine, sorted({e.item_id for e in events}))
    engine.dispose()
    return settings


def _register_model(settings: Settings, engine: Any, vocab: list[str]) -> None:
    import torch

    from shared.model.bundle import ModelConfig
    from shared.model.sasrec import SASRec
    from worker.export import write_bundle

    torch.manual_seed(5)
    config = ModelConfig(
        num_items=len(vocab), max_len=20, d_model=16, n_heads=1, n_blocks=1, dropout=0.0
    )
    model = SASRec(config).eval()
    popularity = np.arange(len(vocab) + 1, dtype=np.float64)
    popularity[0] = 0.0
    directory = settings.bundles_dir / "golden"
    checksum, metrics = write_bundle(
        directory, model=model, vocab=vocab, popularity=popularity, metrics={}
    )
    with session_scope(engine) as session:
        row = model_store.create_model_version(
            session,
            model=ModelVersion(
                status=ModelStatus.READY,
                artifact_path="golden",
                checksum=checksum,
                metrics=metrics,
                config={"model": config.model_dump()},
            ),
        )
        model_store.activate_model(session, version=int(row.version or 0), reason="golden")


def queries() -> dict[str, dict[str, Any]]:
    """Named RecommendRequest fields: every option of Recommend, alone and combined."""
    known = "u00003"
    return {
        "stored-history": {"user_id": known, "k": 10},
        "stored-history-k1": {"user_id": "u00007", "k": 1},
        "allow-seen": {"user_id": known, "k": 10, "allow_seen": True},
        "exclude": {"user_id": known, "k": 8, "exclude_item_ids": ["i000-001", "i002-003"]},
        "candidates": {
            "user_id": known, "k": 5,
            "candidate_item_ids": ["i000-000", "i001-001", "i001-002", "i002-002", "i004-007"],
        },
        "include-label": {"user_id": known, "k": 6, "include_labels": ["topic-2"]},
        "exclude-label": {"user_id": known, "k": 10, "exclude_labels": ["topic-0", "topic-1"]},
        "sale-only": {"user_id": "u00011", "k": 10, "include_labels": ["sale"]},
        "unknown-label": {"user_id": known, "k": 5, "include_labels": ["no-such-label"]},
        "inline-history": {"user_id": "guest", "k": 10, "history": ["i000-000", "i000-001"]},
        "inline-unknown-items": {"user_id": "guest", "k": 5, "history": ["nope", "i003-003"]},
        "inline-all-unknown": {"user_id": "guest", "k": 5, "history": ["nope", "nada"]},
        "new-user": {"user_id": "nobody-here", "k": 7},
        "new-user-labels": {"user_id": "nobody-here", "k": 7, "include_labels": ["topic-4"]},
        "titles": {"user_id": known, "k": 3, "include_titles": True},
        "explained": {"user_id": known, "k": 3, "explain": True},
        "explained-inline": {
            "user_id": "guest", "k": 2, "explain": True,
            "history": ["i001-000", "i001-001", "i001-003", "i002-000"],
        },
        "everything": {
            "user_id": "u00020", "k": 4, "exclude_item_ids": ["i003-000"],
            "exclude_labels": ["topic-1"], "include_titles": True, "explain": True,
        },
    }  # fmt: skip


def answer_of(response: Any) -> dict[str, Any]:
    from shared.proto.recserve.v1 import recommender_pb2 as pb

    return {
        "items": [item.item_id for item in response.items],
        "scores": [round(item.score, 4) for item in response.items],
        "titles": [item.title for item in response.items],
        "explanations": [
            [(e.item_id, round(e.weight, 4), e.events_ago) for e in item.explanations]
            for item in response.items
        ],
        "source": pb.Source.Name(response.source),
        "model_version": response.model_version,
        "history_used": response.history_used,
    }


async def answers(target: str) -> dict[str, Any]:
    """Every query's answer from a server at ``target``, alone and as one RecommendBatch."""
    from shared.client import AsyncClient
    from shared.proto.recserve.v1 import recommender_pb2 as pb

    client = AsyncClient(target)
    recorded: dict[str, Any] = {}
    try:
        named = queries()
        for name, fields in named.items():
            response = await client.recommender.Recommend(pb.RecommendRequest(**fields))
            recorded[name] = answer_of(response)
        batch = await client.recommender.RecommendBatch(
            pb.RecommendBatchRequest(requests=[pb.RecommendRequest(**f) for f in named.values()])
        )
        for name, response in zip(named, batch.responses, strict=True):
            recorded[f"batch:{name}"] = answer_of(response)
    finally:
        await client.close()
    return recorded


async def record_all(folder: Path) -> dict[str, Any]:
    from server.app import start_server

    recorded: dict[str, Any] = {}
    for scenario, with_model in (("model", True), ("no-model", False)):
        settings = build(folder / scenario, with_model=with_model)
        running = await start_server(settings)
        try:
            if with_model:
                registry = running.registry
                await eventually(lambda: registry.current, "the model loaded")  # noqa: B023
            got = await answers(running.target)
        finally:
            await running.stop(0)
        recorded.update({f"{scenario}/{name}": value for name, value in got.items()})
    return recorded


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        result = asyncio.run(record_all(Path(scratch)))
    ANSWERS.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(result)} answers in {ANSWERS}", file=sys.stderr)
