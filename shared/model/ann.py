"""Approximate top-k over a large catalogue: a faiss inverted-file index of the item rows.

Exact scoring reads every item row for every request (10^6 items x 64 floats: 256 MB per
request). Above ``serving.ann_min_items`` items a bundle carries ``items.ivf``: the item
rows clustered by k-means into ``nlist`` lists (inner-product metric), of which a query
scans the ``nprobe`` lists nearest to the user state. nprobe is chosen at export, on
user states of the training data, as the smallest that finds at least
``TARGET_RECALL`` of the exact top-10; the index's measured recall is saved beside it in
``index.json`` and reported by the bench.

The index only proposes candidates: seen, excluded and unavailable items are filtered
after the search, which asks for enough extra rows to cover them and falls back to
exact scoring when too few survive. faiss is imported only where an index is built or
loaded (the ``ann`` extra).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.model.ranking import top_rows

INDEX_FILE = "items.ivf"
INDEX_META = "index.json"
TARGET_RECALL = 0.97
"""Recall@10 against exact scoring that calibration aims for (the bench checks >= 0.95
on held-out states)."""


@dataclass
class IndexMeta:
    nlist: int
    nprobe: int
    recall_at_10: float
    """On the calibration states, against exact scoring."""
    build_seconds: float
    items: int


def exact_top_k(table: np.ndarray, states: np.ndarray, k: int) -> np.ndarray:
    """Rows (1..N) of the k highest scores per state, best first: int64 [B, k]."""
    return top_rows(states @ table[1:].T, k) + 1  # [B, N] scores; rows count from 1


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` present in the same row of ``found``."""
    hits = [
        len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


class ItemIndex:
    """The faiss IVF-Flat index over item rows 1..N (faiss ids are row - 1)."""

    def __init__(self, index: Any, meta: IndexMeta) -> None:
        self.index, self.meta = index, meta
        self.index.nprobe = meta.nprobe

    @classmethod
    def build(
        cls, table: np.ndarray, calibration_states: np.ndarray, *, seed: int = 0
    ) -> ItemIndex:
        """Clusters the item rows of ``table`` (float32 [N+1, D], row 0 padding) and picks
        nprobe on ``calibration_states`` (float32 [S, D])."""
        import faiss

        started = time.perf_counter()
        items = np.ascontiguousarray(table[1:], dtype=np.float32)
        n, dim = items.shape
        # About 4 sqrt(N) lists, each with at least the 39 points faiss's k-means wants.
        nlist = max(1, min(16384, int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = items[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.cp.seed = seed
        index.train(sample)
        index.add(items)
        truth = exact_top_k(table, calibration_states, 10)
        nprobe, recall = 1, 0.0
        while True:
            index.nprobe = nprobe
            _, found = index.search(np.ascontiguousarray(calibration_states, np.float32), 10)
            recall = recall_at(found + 1, truth)
            if recall >= TARGET_RECALL or nprobe >= nlist:
                break
            nprobe = min(nlist, nprobe * 2)
        meta = IndexMeta(nlist, nprobe, recall, time.perf_counter() - started, n)
        return cls(index, meta)

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(directory / INDEX_FILE))
        (directory / INDEX_META).write_text(json.dumps(asdict(self.meta), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ItemIndex | None:
        """The bundle's index, or None when it has none."""
        if not (directory / INDEX_FILE).exists():
            return None
        import faiss

        # One query per call, beside a gRPC event loop: OpenMP threads would only contend.
        faiss.omp_set_num_threads(1)
        meta = IndexMeta(**json.loads((directory / INDEX_META).read_text()))
        return cls(faiss.read_index(str(directory / INDEX_FILE)), meta)

    def search(self, states: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [B, k], scores float32 [B, k]), best first; row 0 where fewer than
        k were found."""
        k = min(k, self.meta.items)
        scores, ids = self.index.search(np.ascontiguousarray(states, dtype=np.float32), k)
        return np.where(ids >= 0, ids + 1, 0), scores
