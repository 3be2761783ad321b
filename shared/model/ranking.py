"""Ranking metrics for leave-one-out evaluation.

A target's rank is the number of candidates scored strictly higher than it (0 = top).
HR@K = mean(rank < K); NDCG@K = mean(1 / log2(rank + 2) if rank < K); MRR = mean(1/(rank+1)).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ranks of ``targets`` within ``scores``.

    scores: float [B, C], with excluded candidates already set to -inf.
    targets: int [B], column index of each row's target.
    Returns int64 [B].
    """
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    return np.asarray((scores > target_scores).sum(axis=1), dtype=np.int64)


def summarize(
    ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS, prefix: str = ""
) -> dict[str, float]:
    """HR@K, NDCG@K for each K, and MRR, from an array of ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    if ranks.size == 0:
        return out
    for k in ks:
        hit = ranks < k
        out[f"{prefix}hr@{k}"] = float(hit.mean())
        out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    out[f"{prefix}mrr"] = float((1.0 / (ranks + 1.0)).mean())
    return out


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """int64 [B, k]: each row's k best columns, best first (ties by column)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
