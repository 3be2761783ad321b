"""Scores from where they are computed: a backend that gives item scores with its states
(TensorRT, torch on CUDA) has them ranked as they are, never computed again on the CPU.
A fake backend's sentinel scores prove it: the answer carries them exactly."""

from __future__ import annotations

import numpy as np

from server.app import start_server
from server.backends.fake import FakeBackend
from shared.client import AsyncClient
from shared.proto.recserve.v1 import recommender_pb2 as pb


class ScoringFake(FakeBackend):
    """States as FakeBackend's; scores 1000 + row, which no product of states could give."""

    computes_scores = True

    def encode_with_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        states = self.encode(history)
        rows = np.arange(self.item_embeddings.shape[0], dtype=np.float32)
        return states, np.tile(1000.0 + rows, (len(history), 1))


async def test_a_backends_own_scores_reach_the_response_untouched(settings) -> None:
    running = await start_server(
        settings, backend_factory=lambda _s, bundle: ScoringFake(bundle.item_embeddings)
    )
    client = AsyncClient(running.target)
    try:
        model = running.registry.current
        assert model is not None
        vocab = model.bundle.vocab
        answer = await client.recommender.Recommend(
            pb.RecommendRequest(user_id="anon", history=[vocab[0]], k=3)
        )
        expected = [(vocab[r - 1], 1000.0 + r) for r in range(len(vocab), len(vocab) - 3, -1)]
        assert [(i.item_id, i.score) for i in answer.items] == expected
    finally:
        await client.close()
        await running.stop(0)
