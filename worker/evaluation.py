"""Leave-one-out evaluation of any scorer: full ranking and sampled negatives.

A scorer maps a list of histories (int64 rows, oldest first) to float scores
[B, N+1] over every model row. Full ranking masks row 0 and the items already in
the history ("ndcg@10", issue 3's protocol); "unfiltered_ndcg@10" masks only row 0 (the
protocol of the HSTU and SASRec+ tables, see ../shared/data/README.md; lower or equal
when a target never repeats an item of its history, as in every data set there, and
higher on repeat-heavy logs like the synthetic demo, where filtering hides repeats).
The sampled protocol ranks the target against ``negatives`` random items the user never
interacted with (fixed seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from shared.ranking import DEFAULT_KS, summarize, target_ranks
from worker.dataset import EvalSet, sampled_candidates, seen_mask

Scorer = Callable[[Sequence[np.ndarray]], np.ndarray]
SAMPLED_SEED = 2023


def evaluate(
    scorer: Scorer,
    eval_set: EvalSet,
    num_items: int,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    negatives: int = 100,
    sampled: bool = True,
    unfiltered: bool = True,
    batch_size: int = 256,
    prefix: str = "",
) -> dict[str, float]:
    """Metrics named like "ndcg@10" (full ranking, seen items filtered),
    "unfiltered_ndcg@10" and "sampled_ndcg@10"."""
    full_ranks: list[np.ndarray] = []
    unfiltered_ranks: list[np.ndarray] = []
    sampled_ranks: list[np.ndarray] = []
    candidates = (
        sampled_candidates(eval_set.histories, eval_set.targets, num_items, negatives, SAMPLED_SEED)
        if sampled
        else None
    )
    for start in range(0, len(eval_set.targets), batch_size):
        histories = eval_set.histories[start : start + batch_size]
        targets = eval_set.targets[start : start + batch_size]
        scores = np.asarray(scorer(histories), dtype=np.float32)  # [B, N+1]
        if candidates is not None:
            rows = candidates[start : start + batch_size]
            picked = np.take_along_axis(scores, rows, axis=1)
            picked[rows == 0] = -np.inf
            sampled_ranks.append(target_ranks(picked, np.zeros(len(rows), dtype=np.int64)))
        masked = scores.copy()
        masked[:, 0] = -np.inf  # padding
        if unfiltered:
            unfiltered_ranks.append(target_ranks(masked, targets))
        masked[seen_mask(histories, scores.shape[1])] = -np.inf
        full_ranks.append(target_ranks(masked, targets))
    metrics = summarize(np.concatenate(full_ranks) if full_ranks else np.array([]), ks, prefix)
    if unfiltered_ranks:
        metrics.update(summarize(np.concatenate(unfiltered_ranks), ks, f"{prefix}unfiltered_"))
    if sampled_ranks:
        metrics.update(summarize(np.concatenate(sampled_ranks), ks, f"{prefix}sampled_"))
    metrics[f"{prefix}users"] = float(len(eval_set.targets))
    return metrics


def popularity_scorer(popularity: np.ndarray) -> Scorer:
    """Scores every history with the training-split item counts."""
    scores = popularity.astype(np.float32)

    def score(histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(scores, (len(histories), scores.shape[0]))

    return score
