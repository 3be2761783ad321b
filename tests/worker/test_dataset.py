"""The streamed, memory-mapped event snapshot and the leave-one-out split over it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from worker.dataset import UserSequences, Vocabulary, leave_one_out, snapshot

pytestmark = pytest.mark.unit


def mapping(seed: int = 3, users: int = 60) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {
        f"u{u:03d}": [f"i{rng.randrange(40):02d}" for _ in range(rng.randrange(1, 12))]
        for u in range(users)
    }


def pages(sequences: dict[str, list[str]], size: int):
    rows = [(user, item) for user in sorted(sequences) for item in sequences[user]]
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@pytest.mark.parametrize("page", [1, 7, 10_000])
def test_snapshot_matches_the_in_memory_sequences(tmp_path: Path, page: int) -> None:
    """Pages that cut a user's events anywhere give the same rows, users and vocabulary."""
    sequences = mapping()
    streamed = snapshot(pages(sequences, page), tmp_path)
    expected = UserSequences.from_mapping(sequences)
    assert isinstance(streamed.flat, np.memmap)
    assert streamed.vocab == expected.vocab == Vocabulary.from_sequences(sequences)
    assert np.array_equal(streamed.flat, expected.flat)
    assert np.array_equal(streamed.offsets, expected.offsets)


def test_split_is_the_documented_leave_one_out() -> None:
    sequences = {"a": ["x", "y", "z", "w"], "b": ["y", "x"], "c": ["z"], "d": ["x", "x", "y"]}
    split = leave_one_out(sequences)
    row = split.vocab.rows()
    assert [h.tolist() for h in split.train] == [
        [row["x"], row["y"]],  # a: all but the last two
        [row["y"], row["x"]],  # b: two events, training only
        [row["x"]],  # d
    ]
    assert [h.tolist() for h in split.valid.histories] == [[row["x"], row["y"]], [row["x"]]]
    assert split.valid.targets.tolist() == [row["z"], row["x"]]
    assert [h.tolist() for h in split.test.histories] == [
        [row["x"], row["y"], row["z"]],
        [row["x"], row["x"]],
    ]
    assert split.test.targets.tolist() == [row["w"], row["y"]]
    expected = np.zeros(len(split.vocab) + 1)
    for seq in split.train:
        np.add.at(expected, seq, 1.0)
    assert np.array_equal(split.popularity, expected), "counts of the training sequences"


def test_a_validation_sample_lets_every_other_user_train_on_its_validation_event() -> None:
    sequences = mapping(users=200)
    full = leave_one_out(sequences)
    split = leave_one_out(sequences, validation_users=25, seed=7)
    assert len(split.valid.targets) == 25
    assert np.array_equal(split.test.targets, full.test.targets), "the test never changes"
    assert all(
        np.array_equal(a, b) for a, b in zip(split.test.histories, full.test.histories, strict=True)
    )

    def pairs(valid) -> set[tuple[tuple[int, ...], int]]:
        return {
            (tuple(h.tolist()), int(t)) for h, t in zip(valid.histories, valid.targets, strict=True)
        }

    assert pairs(split.valid) <= pairs(full.valid), "validators keep the classic pair"
    longer = 0
    for before, after in zip(full.train, split.train, strict=True):
        if len(after) == len(before) + 1:  # trains on its validation event
            longer += 1
            assert np.array_equal(after[:-1], before)
        else:  # a validating user, or one with too few events to be evaluated
            assert np.array_equal(after, before)
    assert longer == len(full.valid.targets) - 25
    expected = np.zeros(len(split.vocab) + 1)
    for seq in split.train:
        np.add.at(expected, seq, 1.0)
    assert np.array_equal(split.popularity, expected), "counts of the training sequences"
    again = leave_one_out(sequences, validation_users=25, seed=7)
    assert np.array_equal(again.valid.targets, split.valid.targets), "seeded"
    assert len(leave_one_out(sequences, validation_users=10_000).valid.targets) == len(
        full.valid.targets
    ), "more than there are users: every user validates"


def test_beyond_accuracy_figures_on_hand_made_lists() -> None:
    from worker.evaluation import beyond_accuracy, top_rows

    popularity = np.array([0, 8, 4, 2, 1, 1], dtype=np.float64)  # rows 1..5
    everyone_gets_the_top = np.array([[1, 2], [1, 2], [1, 2]])
    spread = np.array([[1, 2], [3, 4], [5, 1]])
    narrow = beyond_accuracy(everyone_gets_the_top, popularity)
    wide = beyond_accuracy(spread, popularity)
    assert narrow["coverage@2"] == pytest.approx(2 / 5) and wide["coverage@2"] == 1.0
    assert narrow["gini@2"] == pytest.approx(0.6)  # 2 of 5 items share every slot
    assert wide["gini@2"] == pytest.approx(2 / 15)  # item 1 twice, the rest once
    assert narrow["arp@2"] == pytest.approx(6 / 3.2), "mean count 6 over the mean 3.2"
    assert wide["novelty@2"] > narrow["novelty@2"], "rarer items carry more information"
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert top_rows(scores, 2).tolist() == [[1, 3], [0, 1]], "best first, ties by column"


def test_intra_list_diversity_by_labels() -> None:
    from worker.evaluation import intra_list_diversity

    labels = [frozenset(), frozenset({"a"}), frozenset({"a"}), frozenset({"b"}), frozenset()]
    same = np.array([[1, 2]])
    apart = np.array([[1, 3]])
    assert intra_list_diversity(same, labels) == 0.0
    assert intra_list_diversity(apart, labels) == 1.0
    # Unlabelled items are left out of the pairs; a list with none labelled has no pair.
    assert intra_list_diversity(np.array([[1, 3, 4]]), labels) == 1.0
    assert intra_list_diversity(np.array([[4, 0]]), labels) is None


def test_snapshot_keeps_uneven_weights_aligned_with_the_events(tmp_path: Path) -> None:
    sequences = mapping()
    rows = [(user, item) for user in sorted(sequences) for item in sequences[user]]
    weight = {item: 0.1 if item.endswith("3") else 1.0 for _, item in rows}
    weighted = [(user, item, weight[item]) for user, item in rows]
    pages_of = [weighted[start : start + 5] for start in range(0, len(weighted), 5)]
    streamed = snapshot(pages_of, tmp_path / "uneven")
    assert streamed.weights is not None and len(streamed.weights) == len(streamed.flat)
    items = streamed.vocab.items
    for row, w in zip(streamed.flat.tolist(), streamed.weights.tolist(), strict=True):
        assert w == pytest.approx(weight[items[row - 1]])
    split = leave_one_out(streamed)
    assert split.train.weights is streamed.weights
    even = [(user, item, 0.5) for user, item in rows]
    assert snapshot([even], tmp_path / "even").weights is None  # the same weight: no weights
    assert snapshot([rows], tmp_path / "plain").weights is None
