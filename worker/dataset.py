"""Per-user sequences and the leave-one-out split (numpy only).

For a user with n >= 3 events (rows s[0..n-1], oldest first):
- training sequence: s[:-2] (inputs s[:-3], next-item targets s[1:-2]);
- validation: history s[:-2] -> target s[-2];
- test: history s[:-1] -> target s[-1] (the history includes the validation item).
Users with fewer than 3 events contribute only to training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Vocabulary:
    """External item id <-> model row. Row 0 pads; rows 1..N are items."""

    items: list[str]

    @classmethod
    def from_sequences(cls, sequences: Mapping[str, Sequence[str]]) -> Vocabulary:
        seen: dict[str, None] = {}
        for seq in sequences.values():
            for item in seq:
                seen.setdefault(item, None)
        return cls(sorted(seen))

    def __len__(self) -> int:
        return len(self.items)

    def rows(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.items, start=1)}


@dataclass
class EvalSet:
    histories: list[np.ndarray]  # int64 rows, oldest first
    targets: np.ndarray  # int64 [U]


@dataclass
class Split:
    vocab: Vocabulary
    train: list[np.ndarray]  # training sequences (rows)
    valid: EvalSet
    test: EvalSet
    popularity: np.ndarray  # float64 [N+1], counts in the training sequences

    @property
    def num_items(self) -> int:
        return len(self.vocab)


def leave_one_out(sequences: Mapping[str, Sequence[str]], vocab: Vocabulary | None = None) -> Split:
    vocab = vocab or Vocabulary.from_sequences(sequences)
    row = vocab.rows()
    train: list[np.ndarray] = []
    valid_h: list[np.ndarray] = []
    valid_t: list[int] = []
    test_h: list[np.ndarray] = []
    test_t: list[int] = []
    for user in sorted(sequences):
        seq = np.fromiter((row[i] for i in sequences[user] if i in row), dtype=np.int64)
        if len(seq) < 3:
            if len(seq) >= 2:
                train.append(seq)
            continue
        train.append(seq[:-2])
        valid_h.append(seq[:-2])
        valid_t.append(int(seq[-2]))
        test_h.append(seq[:-1])
        test_t.append(int(seq[-1]))
    popularity = np.zeros(len(vocab) + 1, dtype=np.float64)
    for seq in train:
        np.add.at(popularity, seq, 1.0)
    return Split(
        vocab=vocab,
        train=train,
        valid=EvalSet(valid_h, np.asarray(valid_t, dtype=np.int64)),
        test=EvalSet(test_h, np.asarray(test_t, dtype=np.int64)),
        popularity=popularity,
    )


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """The newest ``max_len`` rows of each history, left-padded with 0 to the longest one.

    Returns int64 [B, L] with L = min(max_len, longest history), at least 1.
    """
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for i, history in enumerate(histories):
        tail = history[-length:]
        if len(tail):
            out[i, length - len(tail) :] = tail
    return out


def seen_mask(histories: Sequence[np.ndarray], num_rows: int) -> np.ndarray:
    """bool [B, num_rows]: True for items in each history and for padding row 0."""
    mask = np.zeros((len(histories), num_rows), dtype=bool)
    for i, history in enumerate(histories):
        mask[i, history] = True
    mask[:, 0] = True
    return mask


def sampled_candidates(
    histories: Sequence[np.ndarray], targets: np.ndarray, num_items: int, n: int, seed: int
) -> np.ndarray:
    """[U, 1+n] rows: the target first, then n items the user never interacted with.

    The fixed seed makes the sampled protocol repeatable.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((len(targets), 1 + n), dtype=np.int64)
    for i, (history, target) in enumerate(zip(histories, targets, strict=True)):
        seen = set(history.tolist())
        seen.add(int(target))
        negatives: list[int] = []
        while len(negatives) < n:
            for item in rng.integers(1, num_items + 1, size=2 * n).tolist():
                if item not in seen:
                    seen.add(item)
                    negatives.append(item)
                    if len(negatives) == n:
                        break
            if len(seen) >= num_items:
                break
        out[i, 0] = target
        out[i, 1 : 1 + len(negatives)] = negatives
    return out
