"""The training transitions SimilarItems blends with the model."""

from __future__ import annotations

import numpy as np
import pytest

from shared.model.next_items import NextItems, blend


def table(*sequences: list[int], rows: int = 5, keep: int = 64) -> NextItems:
    flat = np.asarray([r for s in sequences for r in s], np.int32)
    ends = np.cumsum([len(s) for s in sequences])
    return NextItems.count(flat, ends - [len(s) for s in sequences], ends, rows, keep=keep)


def test_counts_each_transition_inside_a_sequence_most_frequent_first() -> None:
    # 1 -> 2 twice, 2 -> 3 and 2 -> 1 once; nothing across the boundary of two sequences.
    t = table([1, 2, 3], [1, 2], [2, 1], [4])
    assert t.after(np.array([1])) == pytest.approx((np.array([2]), np.array([2.0])))
    rows, counts = t.after(np.array([2]))
    assert rows.tolist() == [1, 3] and counts.tolist() == [1.0, 1.0]  # ties: lower row first
    assert [len(x) for x in t.after(np.array([3]))] == [0, 0]
    assert [len(x) for x in t.after(np.array([4, 0, 9]))] == [0, 0], "none; pad; an added item"
    # A cart pools its items' followers.
    rows, counts = t.after(np.array([1, 2]))
    assert dict(zip(rows.tolist(), counts.tolist(), strict=True)) == {1: 1.0, 2: 2.0, 3: 1.0}


def test_keeps_only_the_most_frequent_followers() -> None:
    t = table([1, 3], [1, 2], [1, 2], [1, 4], [1, 4], [1, 4], keep=2)
    rows, counts = t.after(np.array([1]))
    assert rows.tolist() == [4, 2] and counts.tolist() == [3.0, 2.0]


def test_saved_and_loaded_and_checked_against_the_model(tmp_path) -> None:
    t = table([1, 2, 3], [2, 1])
    t.save(tmp_path / "next.npz")
    loaded = NextItems.load(tmp_path / "next.npz", 5)
    assert [a.tolist() for a in loaded.after(np.array([2]))] == [[1, 3], [1.0, 1.0]]
    with pytest.raises(ValueError, match="rows"):
        NextItems.load(tmp_path / "next.npz", 4)


def test_blend_counts_observations_and_leans_on_the_model_where_there_are_few() -> None:
    logits = np.log(np.asarray([1.0, 0.90, 0.05, 0.03, 0.02], np.float32))  # row 0: padding
    assert blend(logits, (np.zeros(0, np.int64), np.zeros(0, np.float32))) is logits
    # Three observed 1 -> 3 transitions outweigh the model's 0.9 on row 1 (5 x 0.9 = 4.5
    # against 3 + 5 x 0.03)...
    many = blend(logits, (np.array([3]), np.array([3.0], np.float32)), 5.0)
    assert np.argsort(-many[1:]).tolist()[:2] == [0, 2]  # rows 1 then 3: 4.5 > 3.15
    heavy = blend(logits, (np.array([3]), np.array([10.0], np.float32)), 5.0)
    assert int(np.argmax(heavy[1:])) + 1 == 3
    # ...one does not, and every item keeps a finite score (none is dropped as masked).
    one = blend(logits, (np.array([3]), np.array([1.0], np.float32)), 5.0)
    assert int(np.argmax(one[1:])) + 1 == 1
    assert np.isfinite(
        blend(np.asarray([0, 900, -900], np.float32), (np.array([1]), np.ones(1)))
    ).all()
