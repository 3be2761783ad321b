"""The candidates and rank stages: from an encoded history (or none) to the top k eligible
items, best first.

Candidate sources, chosen per request:

- **the whole catalogue**: every item's score (the batch's, or state @ item table),
  re-ranked (popularity debiasing), masked by the eligibility rule, then the top k;
- **the item index** (large catalogues whose bundle carries one, when no scores came
  with the batch, no re-ranking is asked and no item was added since training): k plus
  the rule's bans fetched from the index and the banned dropped; a rule that restricts
  to a set (include labels, candidates) is a filtered search, exact over that set; too
  many bans, or too few found, and the whole catalogue is scored instead;
- **popularity**, for a user with no usable history (the model's training counts) or
  before any model is loaded (the database's counts), through the same rule.

When business rules apply (``steer``, server/pipeline/rules.py), every item is scored,
the boosts and buries move the masked scores, the caps pick the list best first, and
the caller places the pins.
"""

from __future__ import annotations

import numpy as np

from server.pipeline.eligibility import Eligible
from server.pipeline.encoder import Encoding
from server.pipeline.rules import Steering
from server.registry import ModelRegistry
from server.served_model import ServingModel
from shared.config import ServerSettings
from shared.model.rerank import debias
from shared.wire.errors import Unavailable

INDEX_MAX_MASKED = 2048
"""Above this many banned rows (seen, excluded, unavailable, excluded labels) a request
scores every item rather than over-fetch from the item index."""
FILTERED_MAX_ROWS = 50_000
"""A set the rule restricts to (include labels, candidates) up to this size is scored
exactly; a larger one over-fetches from the index."""

Items = list[tuple[str, float]]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest finite scores, best first, without a full sort. Masked
    entries (-inf) are never returned, so there may be fewer than k."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < scores.shape[0]:
        part = np.argpartition(scores, -k)[-k:]
    else:
        part = np.arange(scores.shape[0])
    order = np.argsort(-scores[part], kind="stable")
    best = part[order]
    picked = scores[best]
    if picked[-1] == -np.inf:  # fewer than k unmasked items: drop the masked ones
        best = best[picked > -np.inf]
    return best


class Ranker:
    def __init__(self, settings: ServerSettings, registry: ModelRegistry) -> None:
        self._debias = settings.popularity_debias
        self._use_index = settings.use_item_index
        self._registry = registry

    def by_model(
        self,
        model: ServingModel,
        encoding: Encoding,
        eligible: Eligible,
        k: int,
        steer: Steering | None = None,
    ) -> Items:
        """The top k eligible items for an encoded history."""
        table = model.bundle.item_embeddings
        if steer is None and self.indexed(model, encoding):
            found = self._from_index(model, encoding, eligible, k)
            if found is not None:
                return found
        scores = encoding.scores
        if scores is None:
            scores = table @ encoding.state  # [N+1, D] @ [D] -> [N+1]
        elif len(scores) < len(table):  # the batch scored the trained items; added ones here
            scores = np.concatenate([scores, table[len(scores) :] @ encoding.state])
        if self._debias:
            scores = debias(scores, model.log_share, self._debias)
        return self.masked_top_k(model, scores, eligible, encoding.seen, k, steer)

    def indexed(self, model: ServingModel, encoding: Encoding) -> bool:
        """Whether an unsteered ranking of ``encoding`` goes through the item index."""
        return (
            encoding.scores is None
            and model.index is not None
            and self._use_index
            and not self._debias
            and len(model.bundle.item_embeddings) == model.trained_items + 1  # trained items
        )

    @staticmethod
    def masked_top_k(
        model: ServingModel,
        scores: np.ndarray,
        eligible: Eligible,
        seen: np.ndarray,
        k: int,
        steer: Steering | None = None,
        *,
        logits: bool = True,
    ) -> Items:
        """``scores`` (float32 [N+1], changed in place) masked by the rule, top k (moved
        and capped by the business rules when ``steer`` is given)."""
        scores = eligible.mask(model, scores, seen)
        vocab = model.bundle.vocab
        if steer is None:
            return [(vocab[r - 1], float(scores[r])) for r in top_k(scores, k)]
        steer.adjust_rows(model, scores, logits=logits)
        return steer.choose_rows(scores, vocab, k, top_k)

    def by_popularity(
        self, model: ServingModel, eligible: Eligible, k: int, steer: Steering | None = None
    ) -> Items:
        """A user with no usable history: the model's training popularity."""
        no_history = np.zeros(0, np.int64)
        popularity = model.popularity.copy()
        return self.masked_top_k(model, popularity, eligible, no_history, k, steer, logits=False)

    def without_model(self, eligible: Eligible, k: int, steer: Steering | None = None) -> Items:
        """Before any model is loaded: the database's popularity, through the same rule."""
        fallback = self._registry.fallback
        if fallback is None:
            raise Unavailable(
                "no model is loaded and there is no feedback for a popularity fallback yet; "
                "send Feedback and train a model (StartTraining)"
            )
        if steer is not None:
            allowed = [entry for entry in fallback.items if eligible.allows(entry[0])]
            return steer.choose(steer.adjust_items(allowed), k)
        ranked: Items = []
        for item, score in fallback.items:
            if eligible.allows(item):
                ranked.append((item, score))
                if len(ranked) == k:
                    break
        return ranked

    @staticmethod
    def _from_index(
        model: ServingModel, encoding: Encoding, eligible: Eligible, k: int
    ) -> Items | None:
        """The top k from the item index (module docstring); None to score every item."""
        assert model.index is not None
        banned = eligible.index_bans(model, encoding.seen)
        allowed = eligible.allowed_rows(model)
        vocab = model.bundle.vocab
        if allowed is not None and len(allowed) <= FILTERED_MAX_ROWS:
            allowed = allowed[~np.isin(allowed, banned)]
            scores = model.bundle.item_embeddings[allowed] @ encoding.state
            order = np.argsort(-scores, kind="stable")[:k]
            return [(vocab[allowed[i] - 1], float(scores[i])) for i in order]
        if len(banned) > INDEX_MAX_MASKED:
            return None
        fetch = k + len(banned)
        while True:
            found, scores = model.index.search(encoding.state[None], fetch)
            keep = (found[0] > 0) & ~np.isin(found[0], banned)
            if allowed is not None:
                keep &= np.isin(found[0], allowed)
            picked, picked_scores = found[0][keep][:k], scores[0][keep][:k]
            enough = min(k, model.index.meta.items - len(banned))
            if len(picked) >= enough or allowed is None:
                break
            if fetch >= model.index.meta.items:
                return None
            fetch = min(model.index.meta.items, fetch * 4)  # over-fetch until k are eligible
        if len(picked) < enough:
            return None  # the probed lists held too few: score every item
        return [(vocab[r - 1], float(s)) for r, s in zip(picked, picked_scores, strict=True)]
