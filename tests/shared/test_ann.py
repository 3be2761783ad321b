"""The approximate top-k index: calibrated recall, persistence, and masks in serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.model.ann import TARGET_RECALL, ItemIndex, exact_top_k, recall_at

pytestmark = pytest.mark.unit


def clustered(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An item table (row 0 padding) with topic structure, and two sets of user states
    near the topics, as trained embeddings have."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(64, dim)).astype(np.float32)
    items = topics[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    table = np.vstack([np.zeros((1, dim), np.float32), items]).astype(np.float32)

    def states(count: int) -> np.ndarray:
        picked = topics[rng.integers(0, 64, count)]
        return (picked + 0.3 * rng.normal(size=(count, dim))).astype(np.float32)

    return table, states(500), states(500)


def test_index_reaches_its_recall_on_states_it_was_not_calibrated_on(tmp_path: Path) -> None:
    table, calibration, held_out = clustered(20_000, 32, seed=0)
    index = ItemIndex.build(table, calibration)
    assert index.meta.recall_at_10 >= TARGET_RECALL
    assert index.meta.nprobe < index.meta.nlist, "it scans part of the catalogue, not all"
    index.save(tmp_path)
    loaded = ItemIndex.load(tmp_path)
    assert loaded is not None and loaded.meta == index.meta
    rows, scores = loaded.search(held_out, 10)
    assert rows.min() >= 1 and rows.max() <= 20_000, "model rows, never padding"
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "best first"
    assert recall_at(rows, exact_top_k(table, held_out, 10)) >= 0.95
    assert ItemIndex.load(tmp_path / "nothing-here") is None
