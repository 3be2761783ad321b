"""The one eligibility policy: which items a request may return.

An item is eligible when it is

- not seen (an item of the user's history), unless the request allows seen items;
- not an item the user gave a negative event (settings.events), whatever the request;
- not excluded by the request (``exclude_item_ids``);
- among the request's candidates, when it names any (``candidate_item_ids``);
- available in the catalogue;
- carrying one of ``include_labels`` (when given) and none of ``exclude_labels``;
- not shown to the user too often without an interaction (shown-item capping,
  server/pipeline/shown.py: the ``shown_out`` items).

Every path that returns items asks this object, and nothing else: the model's full
ranking (``mask``, over model rows), the item index (``index_bans`` and
``allowed_rows``), the popularity fallback with or without a model, the exploration slot
and explanations (``allows``, over item ids). So no path can forget a rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Set
from functools import cached_property

import numpy as np

from server.catalogue import Catalogue
from server.pipeline.request import RecommendQuery
from server.registry import ModelRegistry
from server.served_model import ServingModel


class Eligible:
    """The rule for one request (built by EligibilityPolicy.for_request). The sets the
    id-based paths need are built on their first use: the model path needs none."""

    def __init__(
        self,
        query: RecommendQuery,
        seen: Iterable[str] | Callable[[], Iterable[str]],
        unavailable: Set[str],
        catalogue: Catalogue,
        negatives: Callable[[], Set[str]] = frozenset,
        shown_out: frozenset[str] = frozenset(),
    ) -> None:
        self.query = query
        self.shown_out = shown_out
        self._seen = seen
        self._negatives = negatives
        self.unavailable = unavailable
        self.catalogue = catalogue

    @cached_property
    def seen(self) -> frozenset[str]:
        """The user's history's item ids (consulted only unless allow_seen); given, or
        looked up on first use (the cached history, when the request never read it)."""
        if self.query.allow_seen:
            return frozenset()
        seen = self._seen
        return frozenset(seen() if callable(seen) else seen)

    @cached_property
    def negatives(self) -> Set[str]:
        """Items the user gave a negative event: never returned."""
        return self._negatives()

    @cached_property
    def _excluded(self) -> frozenset[str]:
        return frozenset(self.query.exclude_item_ids)

    @cached_property
    def _candidates(self) -> frozenset[str]:
        return frozenset(self.query.candidate_item_ids)

    @cached_property
    def _labels(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self.query.include_labels), frozenset(self.query.exclude_labels)

    @property
    def labelled(self) -> bool:
        return bool(self.query.include_labels or self.query.exclude_labels)

    def allows(self, item_id: str) -> bool:
        """Whether the item may be returned (the id-based paths)."""
        if item_id in self.seen or item_id in self.unavailable or item_id in self._excluded:
            return False
        if item_id in self.negatives or item_id in self.shown_out:
            return False
        if self.query.candidate_item_ids and item_id not in self._candidates:
            return False
        if self.labelled:
            return self.catalogue.has_labels(item_id, *self._labels)
        return True

    def mask(self, model: ServingModel, scores: np.ndarray, seen_rows: np.ndarray) -> np.ndarray:
        """``scores`` (float32 [N+1], changed in place) with every ineligible row at -inf;
        returns the array to rank (a new one when the rule restricts to a set)."""
        query, rows = self.query, model.rows
        scores[0] = -np.inf
        if not query.allow_seen:
            scores[seen_rows] = -np.inf
        if query.exclude_item_ids:
            excluded = [rows[i] for i in query.exclude_item_ids if i in rows]
            scores[np.asarray(excluded, dtype=np.int64)] = -np.inf
        if self.negatives:
            disliked = [rows[i] for i in self.negatives if i in rows]
            scores[np.asarray(disliked, dtype=np.int64)] = -np.inf
        if self.shown_out:
            capped = [rows[i] for i in self.shown_out if i in rows]
            scores[np.asarray(capped, dtype=np.int64)] = -np.inf
        for label in query.exclude_labels:
            scores[self.catalogue.label_rows(model.version, rows, label)] = -np.inf
        if query.include_labels:
            scores = _restricted(scores, self._label_rows(model, query.include_labels))
        if model.unavailable_rows.size:
            scores[model.unavailable_rows] = -np.inf
        if query.candidate_item_ids:
            allowed = [rows[i] for i in query.candidate_item_ids if i in rows]
            scores = _restricted(scores, np.asarray(allowed, np.int64))
        return scores

    def _label_rows(self, model: ServingModel, labels: Sequence[str]) -> np.ndarray:
        carrying = [self.catalogue.label_rows(model.version, model.rows, x) for x in labels]
        return np.unique(np.concatenate(carrying)) if carrying else np.zeros(0, np.int64)

    def allowed_rows(self, model: ServingModel) -> np.ndarray | None:
        """The rows the rule restricts to (include labels, candidates), or None when it
        restricts to no set (every row that is not masked)."""
        query, rows = self.query, model.rows
        sets: list[np.ndarray] = []
        if query.include_labels:
            sets.append(self._label_rows(model, query.include_labels))
        if query.candidate_item_ids:
            sets.append(
                np.asarray([rows[i] for i in query.candidate_item_ids if i in rows], np.int64)
            )
        if not sets:
            return None
        allowed = sets[0] if len(sets) == 1 else np.intersect1d(sets[0], sets[1])
        return np.unique(allowed)

    def index_bans(self, model: ServingModel, seen_rows: np.ndarray) -> np.ndarray:
        """int64 rows the item index must drop from what it finds (sorted, unique)."""
        query, rows = self.query, model.rows
        banned = [model.unavailable_rows]
        if not query.allow_seen:
            banned.append(seen_rows)
        if query.exclude_item_ids:
            banned.append(np.asarray([rows[i] for i in query.exclude_item_ids if i in rows]))
        if self.negatives:
            banned.append(np.asarray([rows[i] for i in self.negatives if i in rows]))
        if self.shown_out:
            banned.append(np.asarray([rows[i] for i in self.shown_out if i in rows]))
        for label in query.exclude_labels:
            banned.append(self.catalogue.label_rows(model.version, rows, label))
        return np.unique(np.concatenate(banned).astype(np.int64))


def _restricted(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    restricted = np.full_like(scores, -np.inf)
    restricted[allowed] = scores[allowed]
    return restricted


class EligibilityPolicy:
    """Builds each request's rule from the request, the user's history, the catalogue's
    availability and labels (server/catalogue.py) and the registry's unavailable items."""

    def __init__(self, catalogue: Catalogue, registry: ModelRegistry) -> None:
        self._catalogue = catalogue
        self._registry = registry

    async def prepare(self, model: ServingModel | None, query: RecommendQuery) -> None:
        """Readies the label filters' model rows off the event loop (the catalogue's LRU)."""
        if model is not None and (query.include_labels or query.exclude_labels):
            labels = [*query.include_labels, *query.exclude_labels]
            await self._catalogue.prepare_labels(model.version, model.rows, labels)

    def for_request(
        self,
        query: RecommendQuery,
        seen: Iterable[str] | Callable[[], Iterable[str]] = (),
        negatives: Callable[[], Set[str]] = frozenset,
        shown_out: frozenset[str] = frozenset(),
    ) -> Eligible:
        return Eligible(
            query, seen, self._registry.unavailable, self._catalogue, negatives, shown_out
        )
