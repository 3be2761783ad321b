"""SimilarItems: items like the given ones, through the same stages as Recommend.

The query's vector is the model's own reading of the query items: their input-side
representation, the sequence model's encoding of them as a short history (in the order
given; one item for a product page, a few for a cart). Every item's score is the inner
product of that vector with the item's row of the item table, the output embeddings the
model scores items with: exact over the whole catalogue, or through the item index where
the bundle carries one (the ranker chooses, as for Recommend). So "similar" means what a
viewer of these items goes on to: the model learnt it from every user's sequence, which
is what item-to-item co-occurrence approximates by counting. Where the bundle carries the
training transitions (shared/model/next_items.py: each item's most frequent next items),
they are blended in: each item ranks by how often it followed the query items plus the
model's probability of it, worth a hundred observations (``blend``). An item seen often is
ranked mostly by what its viewers went on to, a rare or new one by the model; measured
on ML-1M in docs/benchmarks.md. Encodings of the same query items are kept per model
version in a bounded cache: a product page asks again and again.

The eligibility rule is Recommend's, with the query items added to the request's
excluded items: they are never returned. A user, when named, contributes their seen
items (not returned unless allow_seen), nothing else: the list is the same for everyone
otherwise, so a product page can cache it.
"""

from __future__ import annotations

import time

import numpy as np
from cachetools import LRUCache

from server.catalogue import Catalogue
from server.pipeline.eligibility import EligibilityPolicy, Eligible
from server.pipeline.encoder import Encoding, known_rows
from server.pipeline.rank import Items, Ranker
from server.pipeline.request import RecommendQuery, Similar, SimilarQuery
from server.pipeline.service import STAGES, HistoryStage
from server.pipeline.validate import validate_similar
from server.registry import ModelRegistry
from server.served_model import ServingModel
from shared.config import ServerSettings
from shared.model.next_items import blend
from shared.wire.errors import NotFound, Unavailable

QUERY_STATES = 10_000
"""Query encodings kept (a few hundred bytes each): the most asked products' pages."""


class SimilarItemsService:
    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        history: HistoryStage,
        eligibility: EligibilityPolicy,
        ranker: Ranker,
        catalogue: Catalogue,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.history = history
        self.eligibility = eligibility
        self.ranker = ranker
        self.catalogue = catalogue
        self._states: LRUCache[tuple[int, bytes], np.ndarray] = LRUCache(QUERY_STATES)

    async def _query_state(self, model: ServingModel, rows: np.ndarray) -> np.ndarray:
        """The model's encoding of the query items (cached per model version)."""
        key = (model.version, rows.tobytes())
        state = self._states.get(key)
        if state is None:
            encoded = await model.batcher.submit(rows[-model.bundle.config.max_len :])
            state = self._states[key] = np.asarray(encoded.state, dtype=np.float32)
        return state

    def _rank(
        self, model: ServingModel, rows: np.ndarray, encoding: Encoding, eligible: Eligible, k: int
    ) -> Items:
        """The top k: by the model, blended with the query items' training transitions
        when the bundle has them. Where the ranker goes through the item index, the blend
        is over the index's head (k plus one per follower) and the eligible followers, the
        model's probabilities normalised over those candidates."""
        transitions = model.bundle.next_items
        if transitions is None or not self.settings.similar_transitions:
            return self.ranker.by_model(model, encoding, eligible, k)
        followers = transitions.after(rows)
        if not self.ranker.indexed(model, encoding):
            logits = model.bundle.item_embeddings @ encoding.state
            blended = Encoding(encoding.state, blend(logits, followers), encoding.seen)
            return self.ranker.by_model(model, blended, eligible, k)
        head = self.ranker.by_model(model, encoding, eligible, k + len(followers[0]))
        return blend_head(model, encoding.state, head, followers, eligible, k)

    async def similar(self, query: SimilarQuery) -> Similar:
        started = time.perf_counter()
        k = validate_similar(self.settings, query)
        mark = time.perf_counter()
        STAGES["validate"].observe(mark - started)
        model = self.registry.current
        if model is None:
            raise Unavailable(
                "no model is loaded: SimilarItems ranks by the model's item vectors; "
                "train a model (StartTraining) or wait for this replica to load one"
            )
        rows = known_rows(model, query.item_ids)
        unknown = [item for item in query.item_ids if item not in model.rows]
        if not rows.size:
            raise NotFound(
                f"item_ids: none of the {len(query.item_ids)} items is known to model "
                f"version {model.version} (items with no events when it was trained)"
            )
        request = RecommendQuery(
            user_id=query.user_id,
            k=k,
            exclude_item_ids=[*query.exclude_item_ids, *query.item_ids],
            candidate_item_ids=query.candidate_item_ids,
            allow_seen=query.allow_seen,
            include_labels=query.include_labels,
            exclude_labels=query.exclude_labels,
        )
        await self.eligibility.prepare(model, request)
        STAGES["resolve"].observe(time.perf_counter() - mark)
        mark = time.perf_counter()
        seen: list[str] = []
        if query.user_id and not query.allow_seen:
            await self.history.caught_up()
            seen, _ = await self.history.read(request)
        STAGES["history"].observe(time.perf_counter() - mark)
        mark = time.perf_counter()
        negatives = self.history.cache.negatives(query.user_id) if query.user_id else frozenset()
        eligible = self.eligibility.for_request(request, seen, lambda: negatives)
        state = await self._query_state(model, rows)
        items = self._rank(model, rows, Encoding(state, None, known_rows(model, seen)), eligible, k)
        STAGES["rank"].observe(time.perf_counter() - mark)
        result = Similar(items, model.version, unknown)
        if query.include_titles:
            result.titles = await self.catalogue.titles([item for item, _ in items])
        return result


def blend_head(
    model: ServingModel,
    state: np.ndarray,
    head: Items,
    followers: tuple[np.ndarray, np.ndarray],
    eligible: Eligible,
    k: int,
) -> Items:
    """``blend`` over a few candidates: the model's head (item, score) and the eligible
    followers (scored exactly), best k first."""
    vocab, table = model.bundle.vocab, model.bundle.item_embeddings
    candidates = {model.rows[item]: score for item, score in head}
    rows, counts = followers
    for row in rows.tolist():
        if row not in candidates and row <= len(vocab) and eligible.allows(vocab[row - 1]):
            candidates[row] = float(table[row] @ state)
    if not candidates:
        return []
    local = {row: n for n, row in enumerate(candidates, start=1)}  # slot 0: blend's padding
    logits = np.asarray([0.0, *candidates.values()], np.float32)
    kept = [n for n, row in enumerate(rows.tolist()) if row in local]
    scores = blend(logits, (np.asarray([local[rows[n]] for n in kept], np.int64), counts[kept]))
    order = np.argsort(-scores[1:], kind="stable")[:k]
    chosen = list(candidates)
    return [(vocab[chosen[n] - 1], float(scores[n + 1])) for n in order.tolist()]
