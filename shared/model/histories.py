"""Histories as model input: rows of item ids, newest last, left-padded with row 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def left_pad(histories: Sequence[np.ndarray], max_len: int | None = None) -> np.ndarray:
    """The newest ``max_len`` rows of each history (all of them when None), left-padded
    with 0 to the longest one.

    Returns int64 [B, L] with L = min(max_len, longest history), at least 1: an empty
    history is a row of padding, which the model reads as "no events".
    """
    longest = max((len(h) for h in histories), default=1)
    length = max(1, longest if max_len is None else min(max_len, longest))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for i, history in enumerate(histories):
        tail = history[-length:]
        if len(tail):
            out[i, length - len(tail) :] = tail
    return out
