"""A model trained with an item index serves through it: the same answers as scoring
every item, with the masks applied."""

from __future__ import annotations

import numpy as np

from server.app import start_server
from shared.client import AsyncClient
from shared.model.ann import INDEX_FILE
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store, job_store, model_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import JobCreate
from tests.conftest import make_settings
from worker.pipeline import run_train_job

USERS = [f"u{n:05d}" for n in range(0, 60, 7)]


async def answers(settings, requests) -> list[list[str]]:
    running = await start_server(settings)
    client = AsyncClient(running.target)
    try:
        await client.recommender.Recommend(pb.RecommendRequest(user_id=USERS[0], k=1))
        model = running.registry.current
        assert (model.index is not None) == settings.server.use_item_index
        out = []
        for request in requests:
            response = await client.recommender.Recommend(request)
            assert response.source == pb.SOURCE_MODEL and response.model_version == 2
            out.append([item.item_id for item in response.items])
        return out
    finally:
        await client.close()
        await running.stop(0)


async def test_item_index_answers_like_exact_scoring(settings, data_dir) -> None:
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        job = job_store.create_job(
            s, job=JobCreate(params={"index_min_items": 1, "epochs": 2, "activate": "always"})
        )
    assert run_train_job(settings, int(job.id or 0)) == 2
    with session_scope(engine) as s:
        model = model_store.get_model_version(s, version=2)
        history = [item for item, _ in event_store.recent_history(s, user_id=USERS[0], limit=100)]
    engine.dispose()
    assert (data_dir / "models" / model.artifact_path / INDEX_FILE).exists()
    assert model.metrics["ann_recall@10"] >= 0.95
    requests = [pb.RecommendRequest(user_id=user, k=10) for user in USERS]
    requests += [
        pb.RecommendRequest(user_id=USERS[0], k=10, allow_seen=True),
        pb.RecommendRequest(user_id=USERS[0], k=5, exclude_item_ids=history[-3:]),
        pb.RecommendRequest(history=history[:4], k=10),
    ]
    indexed = await answers(settings, requests)
    exact = await answers(make_settings(data_dir, use_item_index=False), requests)
    overlap = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(indexed, exact, strict=True)])
    assert overlap >= 0.95, (indexed, exact)
    assert not set(indexed[0]) & set(history), "seen items stay out"
    assert set(indexed[len(USERS)]) & set(history), "allow_seen lets them in"
    assert not set(indexed[len(USERS) + 1]) & set(history[-3:])
