"""The explain stage, only when a request asks: leave-one-out through the model that ranked
the list (shared/model/explain.py), one sequence per explainable event plus the whole history,
run beside the batcher's queue and admitted at that cost (DynamicBatcher.run_beside)."""

from __future__ import annotations

import numpy as np

from server.catalogue import Catalogue
from server.pipeline.request import Recommendation, Support
from server.served_model import ServingModel
from shared.model.explain import (
    candidate_offset,
    leave_one_out_variants,
    support_weights,
    top_support,
)


class Explainer:
    def __init__(self, catalogue: Catalogue, *, newest: int, top: int) -> None:
        self._catalogue = catalogue
        self._newest = newest
        self._top = top

    async def explain(self, result: Recommendation, model: ServingModel, seen: np.ndarray) -> None:
        """Fills result.explanations for the items ``model`` ranked from ``seen`` (an
        item the exploration slot placed is new to the model: nothing explains it)."""
        known = [item for item, _ in result.items if item in model.rows]
        if not known:
            return
        history = seen[-model.bundle.config.max_len :]
        variants = leave_one_out_variants(history, self._newest)
        states = await model.batcher.run_beside(model.backend.encode, variants)
        rows = np.fromiter((model.rows[item] for item in known), np.int64)
        weights = support_weights(states, model.bundle.item_embeddings[rows])
        vocab = model.bundle.vocab
        offset = candidate_offset(history, self._newest)
        picked = top_support(weights, self._top, offset)
        events = {vocab[history[j] - 1] for support in picked for j, _ in support}
        titles = await self._catalogue.titles(sorted(events))
        for item, support in zip(known, picked, strict=True):
            result.explanations[item] = [
                Support(vocab[history[j] - 1], titles[vocab[history[j] - 1]], w, len(history) - j)
                for j, w in support
            ]
