"""What users went on to: for each item, the items that came right after it in the
training sequences, and how often (the bundle's ``next_items.npz``).

SimilarItems blends these counts with the sequence model's own next-item distribution
(server/pipeline/similar.py): an item seen often has its followers counted, one seen
rarely leans on the model. Stored sparse (CSR over model rows): ``indptr`` int64 [N+2],
``rows`` int32 and ``counts`` float32 [nnz], each item's followers most frequent first,
at most ``KEEP`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KEEP = 64
"""Followers kept per item: the blend only needs the head of each list."""
PRIOR_WEIGHT = 100.0
"""How many observed transitions the model's distribution is worth in the blend. Chosen
on ML-1M's validation pairs (each user's last two training events, the pair's own count
taken out of the table; docs/benchmarks.md), never on its test pairs: HR@10 0.1773 at
1-10, 0.1791 at 50, 0.1815 at 100, 0.1796 at 1,000; co-occurrence alone 0.1732."""


@dataclass(frozen=True)
class NextItems:
    indptr: np.ndarray  # int64 [N+2]: row r's followers are rows[indptr[r]:indptr[r+1]]
    rows: np.ndarray  # int32 [nnz]
    counts: np.ndarray  # float32 [nnz]

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def count(
        cls,
        flat: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        num_rows: int,
        *,
        keep: int = KEEP,
    ) -> NextItems:
        """The transitions a -> b inside each sequence ``flat[starts[i]:ends[i]]`` (model
        rows, 1..num_rows-1), the ``keep`` most frequent per a (ties: lower row first)."""
        lengths = np.maximum(np.asarray(ends) - np.asarray(starts) - 1, 0)
        total = int(lengths.sum())
        if total == 0:
            return cls(np.zeros(num_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0))
        # position of each transition's first item: starts[i] + 0..len_i-2, all sequences
        first = np.repeat(np.asarray(starts, np.int64) - np.cumsum(lengths) + lengths, lengths)
        first += np.arange(total, dtype=np.int64)
        values = np.asarray(flat, dtype=np.int64)
        pairs = values[first] * num_rows + values[first + 1]
        codes, counts = np.unique(pairs, return_counts=True)
        before, after = np.divmod(codes, num_rows)
        order = np.lexsort((after, -counts, before))  # by item, most frequent first
        before, after, counts = before[order], after[order], counts[order]
        group_start = np.searchsorted(before, before, side="left")
        kept = np.arange(len(before)) - group_start < keep
        before, after, counts = before[kept], after[kept], counts[kept]
        indptr = np.zeros(num_rows + 1, np.int64)
        np.cumsum(np.bincount(before, minlength=num_rows), out=indptr[1:])
        return cls(indptr, after.astype(np.int32), counts.astype(np.float32))

    def after(self, query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The followers of the query items, pooled: (rows int64, counts float32), each
        row once. Rows past this table (items added after training) have none."""
        parts = [
            (self.rows[self.indptr[r] : self.indptr[r + 1]],
             self.counts[self.indptr[r] : self.indptr[r + 1]])
            for r in np.asarray(query_rows).tolist()
            if 0 < r < self.num_rows
        ]  # fmt: skip
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(parts) == 1:
            return parts[0][0].astype(np.int64), parts[0][1]
        rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
        counts = np.concatenate([p[1] for p in parts])
        unique, inverse = np.unique(rows, return_inverse=True)
        return unique, np.bincount(inverse, weights=counts).astype(np.float32)

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, indptr=self.indptr, rows=self.rows, counts=self.counts)

    @classmethod
    def load(cls, path: Path, num_rows: int) -> NextItems:
        """Reads ``path``; raises ValueError when it does not fit a model of ``num_rows``
        rows (items and padding)."""
        with np.load(path, allow_pickle=False) as data:
            table = cls(
                data["indptr"].astype(np.int64),
                data["rows"].astype(np.int32),
                data["counts"].astype(np.float32),
            )
        if table.num_rows != num_rows or table.indptr[-1] != len(table.rows):
            raise ValueError(f"{path.name} has {table.num_rows} rows, the model {num_rows}")
        if len(table.rows) != len(table.counts) or (
            len(table.rows) and (table.rows.min() < 1 or table.rows.max() >= num_rows)
        ):
            raise ValueError(f"{path.name} names rows outside the model's 1..{num_rows - 1}")
        return table


def blend(
    logits: np.ndarray,
    followers: tuple[np.ndarray, np.ndarray],
    prior_weight: float = PRIOR_WEIGHT,
) -> np.ndarray:
    """Scores (float32, like ``logits``) ranking items by counts[b] + w * p_model(b): the
    observed transitions with the model's softmax as a prior worth ``prior_weight``
    observations (a Dirichlet-smoothed estimate of what comes next). With no followers
    the order is the model's own. Row 0 (padding) is left as it was."""
    rows, counts = followers
    if not len(rows):
        return logits
    shifted = logits.astype(np.float64) - logits[1:].max()
    log_z = float(np.log(np.exp(shifted[1:]).sum()))
    scores: np.ndarray = shifted + (np.log(prior_weight) - log_z)  # log(w * p_model), never -inf
    scores[rows] = np.logaddexp(scores[rows], np.log(counts))
    scores[0] = logits[0]
    return scores.astype(np.float32)
