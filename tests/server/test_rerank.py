"""Popularity debiasing at serving time: off by default, and when set, the served order is
the model's scores re-ranked by score - w * log(item's training share)."""

from __future__ import annotations

import numpy as np
import pytest

from server.app import start_server
from shared.client import AsyncClient
from shared.model.rerank import debias, log_share
from shared.proto.recserve.v1 import recommender_pb2 as pb
from tests.conftest import make_settings

HISTORY = ["i002-000", "i001-003", "i002-001"]


async def ranked(settings) -> tuple[list[tuple[str, float]], object]:
    running = await start_server(settings)
    client = AsyncClient(running.target)
    try:
        answer = await client.recommender.Recommend(pb.RecommendRequest(history=HISTORY, k=15))
        assert answer.source == pb.SOURCE_MODEL
        return [(i.item_id, i.score) for i in answer.items], running.registry.current
    finally:
        await client.close()
        await running.stop(0)


async def test_popularity_debiasing_reranks_by_the_documented_formula(data_dir) -> None:
    plain, model = await ranked(make_settings(data_dir))
    debiased, _ = await ranked(make_settings(data_dir, popularity_debias=1.0))
    shares = log_share(model.bundle.popularity)
    rows = model.rows
    # Each served score is the model's score less w * log share ...
    for item, score in debiased:
        if item in dict(plain):
            assert score == pytest.approx(dict(plain)[item] - shares[rows[item]], abs=1e-4)
    # ... so the debiased list leans to less popular items than the plain one.
    mean_share = lambda answer: np.mean([shares[rows[i]] for i, _ in answer])  # noqa: E731
    assert mean_share(debiased) < mean_share(plain)
    assert [i for i, _ in debiased] != [i for i, _ in plain]


def test_debias_keeps_unseen_items_finite() -> None:
    shares = log_share(np.array([0.0, 10.0, 0.0, 1.0]))
    assert shares[0] == 0 and np.all(np.isfinite(shares))
    assert shares[2] < shares[3] < shares[1]  # the rarest gains most
    scores = debias(np.array([0.0, 1.0, 1.0, 1.0], dtype=np.float32), shares, 0.5)
    assert scores[2] > scores[3] > scores[1]
