"""Per-user sequences and the leave-one-out split (numpy only).

For a user with n >= 3 events (rows s[0..n-1], oldest first):
- training sequence: s[:-2] (inputs s[:-3], next-item targets s[1:-2]);
- validation: history s[:-2] -> target s[-2];
- test: history s[:-1] -> target s[-1] (the history includes the validation item).
Users with fewer than 3 events contribute only to training.

With ``validation_users`` set, only that many users (a seeded random choice) hold out
s[-2] for validation; every other user trains on s[:-1], so its newest transition before
the test (usually the one most like it in time) is learned from instead of set aside. The
test is the same either way: every user's last event, never trained on.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

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


class Ragged(Sequence[np.ndarray]):
    """Rows of one flat array: row i is ``flat[starts[i]:ends[i]]``, a view (nothing is
    copied, so rows over a memory-mapped snapshot stay on disk until read). ``weights``,
    when the events weigh differently: float32, aligned with ``flat``."""

    def __init__(
        self,
        flat: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> None:
        self.flat, self.starts, self.ends, self.weights = flat, starts, ends, weights

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Ragged: ...
    def __getitem__(self, index: int | slice) -> np.ndarray | Ragged:
        if isinstance(index, slice):
            return Ragged(self.flat, self.starts[index], self.ends[index], self.weights)
        return np.asarray(self.flat[self.starts[index] : self.ends[index]], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts


@dataclass
class UserSequences:
    """Every user's events as model rows, oldest first, users in id order: user i's
    events are ``flat[offsets[i]:offsets[i + 1]]``. 4 bytes an event (int32), in memory or
    in a memory-mapped file (``snapshot``); ``weights`` (float32, aligned with ``flat``)
    when the events do not all weigh the same."""

    flat: np.ndarray
    offsets: np.ndarray  # int64 [U + 1]
    vocab: Vocabulary
    weights: np.ndarray | None = None

    @classmethod
    def from_mapping(cls, sequences: Mapping[str, Sequence[str]]) -> UserSequences:
        vocab = Vocabulary.from_sequences(sequences)
        row = vocab.rows()
        users = sorted(sequences)
        flat = np.fromiter(
            (row[item] for user in users for item in sequences[user]), dtype=np.int32
        )
        lengths = np.fromiter((len(sequences[u]) for u in users), dtype=np.int64, count=len(users))
        return cls(flat, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), vocab)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def snapshot(
    pages: Iterable[Sequence[tuple[str, str] | tuple[str, str, float]]], directory: Path
) -> UserSequences:
    """Writes (user, item) pages, ordered by user and then time, to ``directory``/events.i32
    and returns the sequences over a memory map of it. Rows of (user, item, weight) also
    write the weights to ``directory``/weights.f32; they are kept when they differ.

    Memory holds one page, the item vocabulary and one int64 per user; the events go to
    the file as they arrive. Items get provisional rows as first seen and are renumbered
    in sorted order at the end (in chunks over the map), so the rows match
    Vocabulary.from_sequences on the same data.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path, weights_path = directory / "events.i32", directory / "weights.f32"
    first_seen: dict[str, int] = {}
    offsets = array("q", [0])
    total, previous, uneven = 0, None, False
    first_weight: float | None = None
    with path.open("wb") as out, weights_path.open("wb") as weights_out:
        for page in pages:
            rows = np.fromiter(
                (first_seen.setdefault(row[1], len(first_seen) + 1) for row in page),
                dtype=np.int32,
                count=len(page),
            )
            if page and len(page[0]) > 2:
                weights = np.fromiter((row[2] for row in page), np.float32, len(page))  # type: ignore[misc]
                if first_weight is None:
                    first_weight = float(weights[0])
                uneven = uneven or bool((weights != first_weight).any())
                weights_out.write(weights.tobytes())
            for position, row in enumerate(page):
                if row[0] != previous:
                    if previous is not None:
                        offsets.append(total + position)
                    previous = row[0]
            total += len(page)
            out.write(rows.tobytes())
    if previous is not None:
        offsets.append(total)
    vocab = Vocabulary(sorted(first_seen))
    renumber = np.zeros(len(first_seen) + 1, dtype=np.int32)
    for row_number, item in enumerate(vocab.items, start=1):
        renumber[first_seen[item]] = row_number
    del first_seen
    if total == 0:
        return UserSequences(np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64), vocab)
    flat = np.memmap(path, dtype=np.int32, mode="r+", shape=(total,))
    for start in range(0, total, SNAPSHOT_CHUNK):
        flat[start : start + SNAPSHOT_CHUNK] = renumber[flat[start : start + SNAPSHOT_CHUNK]]
    flat.flush()
    kept = None
    if uneven and weights_path.stat().st_size == 4 * total:
        kept = np.memmap(weights_path, dtype=np.float32, mode="r", shape=(total,))
    return UserSequences(
        np.memmap(path, dtype=np.int32, mode="r", shape=(total,)),
        np.frombuffer(offsets, dtype=np.int64).copy(),
        vocab,
        kept,
    )


SNAPSHOT_CHUNK = 1 << 22


@dataclass
class EvalSet:
    histories: Sequence[np.ndarray]  # int64 rows, oldest first
    targets: np.ndarray  # int64 [U]

    def head(self, count: int) -> EvalSet:
        return EvalSet(self.histories[:count], self.targets[:count])


@dataclass
class Split:
    vocab: Vocabulary
    train: Ragged  # training sequences (rows)
    valid: EvalSet
    test: EvalSet
    popularity: np.ndarray  # float64 [N+1], counts in the training sequences

    @property
    def num_items(self) -> int:
        return len(self.vocab)


def leave_one_out(
    sequences: Mapping[str, Sequence[str]] | UserSequences,
    *,
    validation_users: int = 0,
    seed: int = 0,
) -> Split:
    """The split of every user's events (see the module docstring), as views of one flat
    array: nothing is copied per user. ``validation_users`` > 0: at most that many users
    validate (chosen with ``seed``); the others train on their validation event."""
    if not isinstance(sequences, UserSequences):
        sequences = UserSequences.from_mapping(sequences)
    starts, ends = sequences.offsets[:-1], sequences.offsets[1:]
    lengths = ends - starts
    evaluated = lengths >= 3
    validated = evaluated
    if 0 < validation_users < int(evaluated.sum()):
        chosen = np.random.default_rng(seed).choice(
            np.flatnonzero(evaluated), size=validation_users, replace=False
        )
        validated = np.zeros_like(evaluated)
        validated[chosen] = True
    trained = lengths >= 2
    train_ends = np.where(validated, ends - 2, np.where(evaluated, ends - 1, ends))
    flat = sequences.flat
    popularity = np.bincount(np.asarray(flat), minlength=len(sequences.vocab) + 1).astype(
        np.float64
    )
    held_out = np.r_[ends[validated] - 2, ends[evaluated] - 1]
    popularity -= np.bincount(np.asarray(flat[held_out]), minlength=len(popularity))
    single = starts[lengths == 1]  # users with one event: not in the training sequences
    popularity -= np.bincount(np.asarray(flat[single]), minlength=len(popularity))
    s, e = starts[evaluated], ends[evaluated]
    vs, ve = starts[validated], ends[validated]
    return Split(
        vocab=sequences.vocab,
        train=Ragged(flat, starts[trained], train_ends[trained], sequences.weights),
        valid=EvalSet(Ragged(flat, vs, ve - 2), np.asarray(flat[ve - 2], dtype=np.int64)),
        test=EvalSet(Ragged(flat, s, e - 1), np.asarray(flat[e - 1], dtype=np.int64)),
        popularity=popularity,
    )


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
