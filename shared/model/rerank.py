"""Popularity debiasing: an optional re-ranking of the model's scores.

A softmax-trained model's score is a log-probability up to a constant, and popular
items carry a large share of it. The re-ranked score is

    score - weight * log(share of training events of the item)

so weight 0 is the model as trained, and weight 1 ranks by how much more likely the item
is for this user than for anyone (pointwise mutual information). Between them the weight
trades accuracy for coverage and less popular lists; ``recserve evaluate --rerank``
measures the trade-off, and the server applies it with ``server.popularity_debias``.
"""

from __future__ import annotations

import numpy as np


def log_share(popularity: np.ndarray) -> np.ndarray:
    """float32 [N+1]: log of each item's share of training events (add-one smoothed, so
    an item never seen in training is the rarest, not -inf); row 0 (padding) is 0."""
    counts = np.asarray(popularity, dtype=np.float64)[1:] + 1.0
    out = np.zeros(len(counts) + 1, dtype=np.float32)
    out[1:] = np.log(counts / counts.sum())
    return out


def debias(scores: np.ndarray, shares: np.ndarray, weight: float) -> np.ndarray:
    """The re-ranked scores ([..., N+1]; ``shares`` from log_share); a new array."""
    return scores - np.float32(weight) * shares
