"""A model version as the server holds it: its bundle, backend, batcher, item rows and
index; how a batch of histories becomes states and scores; and the popularity fallback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from server.backends.base import Backend
from server.batcher import DynamicBatcher
from shared.model import bundle as bundle_format
from shared.model.ann import ItemIndex


class Encoded(NamedTuple):
    """One history's share of a model run."""

    state: np.ndarray
    """float32 [D], the user state."""
    scores: np.ndarray | None
    """float32 [N+1], state @ item_embeddings.T, computed with the batch; None for
    catalogues above BATCH_SCORING_MAX_ITEMS (then scored per request)."""


BATCH_SCORING_MAX_ITEMS = 200_000
"""Above this many items a batch's score matrix ([B, N+1] floats) gets too large."""


@dataclass(frozen=True)
class BatchOutput:
    states: np.ndarray  # float32 [B, D]
    scores: np.ndarray | None  # float32 [B, N+1]

    def __getitem__(self, i: int) -> Encoded:
        return Encoded(self.states[i], None if self.scores is None else self.scores[i])


def encode_and_score(
    backend: Backend, item_embeddings: np.ndarray, *, score: bool = True
) -> Callable[[np.ndarray], BatchOutput]:
    """The batcher's run: the backend's states, then every item's score for the whole
    batch in one matrix product, in the model's thread (BLAS releases the GIL), so the
    event loop only masks and picks the top k. A backend that computes the scores where
    the model runs (TensorRT, torch on CUDA) gives them with its states, and they are not
    computed again. ``score`` False (a model ranked through its item index): states only."""
    table = np.ascontiguousarray(item_embeddings.T)  # [D, N+1]
    score = score and table.shape[1] <= BATCH_SCORING_MAX_ITEMS

    def run(histories: np.ndarray) -> BatchOutput:
        if score and backend.computes_scores:  # computed where the model ran: not again here
            return BatchOutput(*backend.encode_with_scores(histories))
        states = backend.encode(histories)
        if not score:
            return BatchOutput(states, None)
        if len(states) == 1:  # a lone request: a matrix-vector product, one BLAS thread
            return BatchOutput(states, (item_embeddings @ states[0])[None])
        return BatchOutput(states, states @ table)

    return run


@dataclass
class ServingModel:
    """A loaded bundle with its backend and a batcher whose runs give Encoded rows."""

    version: int
    bundle: bundle_format.Bundle
    backend: Backend
    batcher: DynamicBatcher[Encoded]
    rows: dict[str, int]
    popularity: np.ndarray  # float32 [N+1], share of training events; row 0 = -inf
    unavailable_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    index: ItemIndex | None = None
    """The bundle's approximate top-k index, when it has one and the server uses it."""
    log_share: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """float32 [N+1], log of each item's share of training events (popularity debiasing)."""

    @property
    def trained_items(self) -> int:
        """N: rows 1..N are the items the model was trained with; rows above are items
        added since, known by their properties (server/new_items.py)."""
        return self.bundle.config.num_items

    def with_items(self, items: list[str], table: np.ndarray) -> ServingModel:
        """This model with ``items`` appended as rows after its own, and ``table`` (its
        item table with their rows, float32 [N+1+E, D]) for scoring. A new object: a
        request holding this one keeps a consistent view."""
        rows = dict(self.rows)
        for row, item in enumerate(items, start=len(self.bundle.vocab) + 1):
            rows[item] = row
        added = len(items)
        floor = self.log_share[1:].min() if self.log_share.size > 1 else np.float32(0.0)
        return replace(
            self,
            bundle=replace(self.bundle, vocab=[*self.bundle.vocab, *items], item_embeddings=table),
            rows=rows,
            popularity=np.concatenate([self.popularity, np.zeros(added, np.float32)]),
            log_share=(
                np.concatenate([self.log_share, np.full(added, floor, np.float32)])
                if self.log_share.size
                else self.log_share
            ),
        )


@dataclass
class Fallback:
    """Popularity from the database, for when no model is loaded yet."""

    items: list[tuple[str, float]]


@dataclass(frozen=True)
class Candidate:
    version: int
    path: Path
    checksum: str
