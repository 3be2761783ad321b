"""Leave-one-out evaluation of any scorer: full ranking and sampled negatives.

A scorer maps a list of histories (int64 rows, oldest first) to float scores
[B, N+1] over every model row. Full ranking masks row 0 and the items already in
the history ("ndcg@10", the SASRec+ protocol); "unfiltered_ndcg@10" masks only row 0 (the
protocol of the HSTU and SASRec+ tables, see ../shared/data/README.md; lower or equal
when a target never repeats an item of its history, as in every data set there, and
higher on repeat-heavy logs like the synthetic demo, where filtering hides repeats).
The sampled protocol ranks the target against ``negatives`` random items the user never
interacted with (fixed seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from shared.model.ranking import DEFAULT_KS, summarize, target_ranks, top_rows
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
    popularity: np.ndarray | None = None,
    labels: Sequence[frozenset[str]] | None = None,
) -> dict[str, float]:
    """Metrics named like "ndcg@10" (full ranking, seen items filtered),
    "unfiltered_ndcg@10" and "sampled_ndcg@10"; with ``popularity`` (training counts
    [N+1]) also the beyond-accuracy figures of the filtered top 10 (beyond_accuracy),
    and with ``labels`` (each row's catalogue labels) their intra-list diversity."""
    top_lists: list[np.ndarray] = []
    lifts: list[np.ndarray] = []
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
        if popularity is not None:
            top = top_rows(masked, BEYOND_K)
            top_lists.append(top)
            lifts.append(popularity_lift(top, histories, popularity))
    metrics = summarize(np.concatenate(full_ranks) if full_ranks else np.array([]), ks, prefix)
    for name, ranks in (("unfiltered_", unfiltered_ranks), ("sampled_", sampled_ranks)):
        if ranks:
            metrics.update(summarize(np.concatenate(ranks), ks, f"{prefix}{name}"))
    metrics[f"{prefix}users"] = float(len(eval_set.targets))
    if popularity is not None and top_lists:
        metrics.update(beyond_accuracy(np.concatenate(top_lists), popularity, prefix))
        metrics[f"{prefix}popularity_lift@{BEYOND_K}"] = float(np.mean(np.concatenate(lifts)))
        ild = intra_list_diversity(np.concatenate(top_lists), labels) if labels else None
        if ild is not None:
            metrics[f"{prefix}ild@{BEYOND_K}"] = ild
    return metrics


def intra_list_diversity(top: np.ndarray, labels: Sequence[frozenset[str]]) -> float | None:
    """Intra-list diversity by labels: over lists ([U, k] rows), the mean distance
    1 - Jaccard(labels) between two listed items, over the pairs where both items have
    labels. None when no pair has (a catalogue without labels)."""
    total, pairs = 0.0, 0
    for row in top:
        sets = [labels[r] for r in row if labels[r]]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                union = len(sets[i] | sets[j])
                total += 1.0 - len(sets[i] & sets[j]) / union
                pairs += 1
    return total / pairs if pairs else None


BEYOND_K = 10


def popularity_lift(
    top: np.ndarray, histories: Sequence[np.ndarray], popularity: np.ndarray
) -> np.ndarray:
    """Per user: the mean training count of the listed items over the mean count of the
    items in the user's own history (popularity bias against the user's taste, a
    calibration measure: 1 means lists as popular as what the user picks; above 1, lists
    more mainstream than the user)."""
    listed = popularity[top].mean(axis=1)
    own = np.array([popularity[h].mean() if len(h) else np.nan for h in histories])
    return listed / np.maximum(own, 1.0)


def beyond_accuracy(top: np.ndarray, popularity: np.ndarray, prefix: str = "") -> dict[str, float]:
    """What the top-k lists ([U, k] model rows) look like beyond hitting the target:

    - coverage@k: share of the catalogue that appears in at least one list;
    - gini@k: Gini index of how often each item appears across lists (0: every item
      equally often, 1: one item everywhere), over the whole catalogue;
    - arp@k: average recommendation popularity, the mean training count of the listed
      items, over the catalogue's mean count (1: as popular as the average item; the
      popularity baseline is far above 1);
    - novelty@k: mean self-information -log2(p) of the listed items, p being an item's
      share of training events (higher: less obvious items).
    """
    k = top.shape[1]
    n = len(popularity) - 1
    counts = np.bincount(top.ravel(), minlength=n + 1)[1:].astype(np.float64)
    exposure = np.sort(counts)
    total = exposure.sum()
    if total > 0:
        cumulative = np.cumsum(exposure)
        gini = float((n + 1 - 2 * (cumulative / total).sum()) / n)
    else:
        gini = 0.0
    pop = np.asarray(popularity, dtype=np.float64)
    mean_count = pop[1:].mean() or 1.0
    share = np.maximum(pop / max(pop[1:].sum(), 1.0), 1e-12)
    return {
        f"{prefix}coverage@{k}": float((counts > 0).sum() / n),
        f"{prefix}gini@{k}": gini,
        f"{prefix}arp@{k}": float(pop[top].mean() / mean_count),
        f"{prefix}novelty@{k}": float((-np.log2(share[top])).mean()),
    }


def popularity_scorer(popularity: np.ndarray) -> Scorer:
    """Scores every history with the training-split item counts."""
    scores = popularity.astype(np.float32)

    def score(histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(scores, (len(histories), scores.shape[0]))

    return score
