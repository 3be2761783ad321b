"""The request pipeline's stages alone, with a fake model and catalogue: no database, no
server, no sockets, no sleeps (the unit layer)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from server.pipeline.eligibility import Eligible
from server.pipeline.encoder import Encoding
from server.pipeline.rank import Ranker, top_k
from server.pipeline.request import RecommendQuery
from server.pipeline.validate import validate_batch, validate_query
from shared.config import ServerSettings
from shared.wire.errors import InvalidArgument, Unavailable

pytestmark = pytest.mark.unit

VOCAB = [f"i{n}" for n in range(1, 11)]  # model rows 1..10; row 0 is padding
LABELS = {item: {"even" if int(item[1:]) % 2 == 0 else "odd"} for item in VOCAB}
UNAVAILABLE = {"i10"}


class FakeCatalogue:
    def has_labels(self, item_id: str, include: frozenset[str], exclude: frozenset[str]) -> bool:
        labels = LABELS.get(item_id, set())
        return (not include or bool(labels & include)) and not labels & exclude

    def label_rows(self, version: int, rows: dict[str, int], label: str) -> np.ndarray:
        return np.asarray([rows[i] for i in VOCAB if label in LABELS[i]], np.int64)


def fake_model() -> Any:
    rows = {item: n + 1 for n, item in enumerate(VOCAB)}
    embeddings = np.zeros((len(VOCAB) + 1, 2), np.float32)
    embeddings[1:, 0] = np.arange(len(VOCAB), 0, -1)  # i1 scores highest, i10 lowest
    return SimpleNamespace(
        rows=rows,
        version=7,
        unavailable_rows=np.asarray([rows[i] for i in UNAVAILABLE], np.int64),
        bundle=SimpleNamespace(vocab=VOCAB, item_embeddings=embeddings),
        popularity=np.arange(len(VOCAB) + 1, dtype=np.float32),  # i10 most popular
        index=None,
        log_share=np.zeros(len(VOCAB) + 1, np.float32),
    )


def ranker(**settings: Any) -> Ranker:
    registry = SimpleNamespace(fallback=SimpleNamespace(items=[(i, 1.0) for i in VOCAB[::-1]]))
    return Ranker(ServerSettings(**settings), registry)  # type: ignore[arg-type]


SEEN = ["i1", "i2"]
RULES: dict[str, dict[str, Any]] = {
    "seen": {},
    "exclude": {"exclude_item_ids": ["i3", "i4"]},
    "candidates": {"candidate_item_ids": ["i2", "i5", "i6", "i10"]},
    "include labels": {"include_labels": ["odd"]},
    "exclude labels": {"exclude_labels": ["odd"]},
    "allow seen": {"allow_seen": True},
}


def expected(query: RecommendQuery) -> list[str]:
    """What the rule allows, by its definition, in model order (i1 best)."""
    out = []
    for item in VOCAB:
        if item in UNAVAILABLE or item in query.exclude_item_ids:
            continue
        if not query.allow_seen and item in SEEN:
            continue
        if query.candidate_item_ids and item not in query.candidate_item_ids:
            continue
        if query.include_labels and not LABELS[item] & set(query.include_labels):
            continue
        if LABELS[item] & set(query.exclude_labels):
            continue
        out.append(item)
    return out


@pytest.mark.parametrize("rule", RULES)
def test_every_path_applies_every_rule(rule: str) -> None:
    query = RecommendQuery(user_id="u", k=len(VOCAB), **RULES[rule])
    model = fake_model()
    seen_rows = np.asarray([model.rows[i] for i in SEEN], np.int64)
    eligible = Eligible(query, SEEN, UNAVAILABLE, FakeCatalogue())  # type: ignore[arg-type]
    want = expected(query)
    by_model = ranker().by_model(
        model, Encoding(np.ones(2, np.float32), None, seen_rows), eligible, query.k
    )
    assert [item for item, _ in by_model] == want
    assert [item for item in VOCAB if eligible.allows(item)] == want
    fallback = ranker().without_model(eligible, query.k)
    assert sorted(item for item, _ in fallback) == sorted(want)
    # Popularity serves a user with no usable history: no seen rows to drop.
    popular = ranker().by_popularity(model, eligible, query.k)
    assert sorted(item for item, _ in popular) == sorted(expected(replace(query, allow_seen=True)))


def test_scores_that_come_with_the_batch_are_ranked_untouched() -> None:
    model = fake_model()
    sentinel = np.arange(len(VOCAB) + 1, dtype=np.float32) * 1000.0  # i10 (unavailable) highest
    eligible = Eligible(RecommendQuery(user_id="u", k=3), [], set(), FakeCatalogue())  # type: ignore[arg-type]
    encoding = Encoding(np.ones(2, np.float32), sentinel.copy(), np.zeros(0, np.int64))
    ranked = ranker().by_model(model, encoding, eligible, 3)
    assert ranked == [("i9", 9000.0), ("i8", 8000.0), ("i7", 7000.0)]


def test_no_model_and_no_fallback_is_unavailable() -> None:
    eligible = Eligible(RecommendQuery(user_id="u", k=3), [], set(), FakeCatalogue())  # type: ignore[arg-type]
    empty = Ranker(ServerSettings(), SimpleNamespace(fallback=None))  # type: ignore[arg-type]
    with pytest.raises(Unavailable, match="StartTraining"):
        empty.without_model(eligible, 3)


def test_top_k_never_returns_masked_entries() -> None:
    scores = np.asarray([-np.inf, 3.0, -np.inf, 5.0, 1.0], np.float32)
    assert top_k(scores, 2).tolist() == [3, 1]
    assert top_k(scores, 10).tolist() == [3, 1, 4]
    assert top_k(scores, 0).tolist() == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (RecommendQuery(user_id="", k=5), "user_id"),
        (RecommendQuery(user_id="u\x00", k=5), "user_id"),
        (RecommendQuery(user_id="u", k=-1), "k"),
        (RecommendQuery(user_id="u", k=5, exclude_item_ids=["x"] * 100_000), "exclude_item_ids"),
    ],
)
def test_validation_names_the_field(query: RecommendQuery, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_query(ServerSettings(), query)
    assert raised.value.field == field
    assert "accepted" in raised.value.description or "required" in raised.value.description


def test_a_batch_names_the_request_that_is_wrong() -> None:
    good, bad = RecommendQuery(user_id="u", k=5), RecommendQuery(user_id="", k=5)
    with pytest.raises(InvalidArgument) as raised:
        validate_batch(ServerSettings(), [good, bad])
    assert raised.value.field == "requests[1].user_id"
    with pytest.raises(InvalidArgument, match="requests"):
        validate_batch(ServerSettings(), [])


@pytest.mark.parametrize("allow_seen", [False, True])
def test_a_disliked_item_is_never_returned_whatever_allow_seen_says(allow_seen: bool) -> None:
    query = RecommendQuery(user_id="u", k=len(VOCAB), allow_seen=allow_seen)
    model = fake_model()
    disliked = frozenset({"i3", "i5"})
    eligible = Eligible(query, SEEN, UNAVAILABLE, FakeCatalogue(), lambda: disliked)  # type: ignore[arg-type]
    seen_rows = np.asarray([model.rows[i] for i in SEEN], np.int64)
    by_model = ranker().by_model(
        model, Encoding(np.ones(2, np.float32), None, seen_rows), eligible, query.k
    )
    want = [item for item in expected(query) if item not in disliked]
    assert [item for item, _ in by_model] == want
    assert [item for item in VOCAB if eligible.allows(item)] == want
    assert set(model.rows[i] for i in disliked) <= set(eligible.index_bans(model, seen_rows))


def test_shown_item_capping_is_part_of_the_rule_on_every_path() -> None:
    """Items capped for being shown too often (server/pipeline/shown.py) are left out by
    the model's ranking, the id-based paths and the item index's bans alike."""
    query = RecommendQuery(user_id="u", k=len(VOCAB))
    model = fake_model()
    capped = frozenset({"i3", "i5"})
    eligible = Eligible(query, (), set(), FakeCatalogue(), shown_out=capped)  # type: ignore[arg-type]
    ranked = ranker().by_model(
        model, Encoding(np.ones(2, np.float32), None, np.zeros(0, np.int64)), eligible, query.k
    )
    names = [item for item, _ in ranked]
    assert not capped & set(names) and len(names) == len(VOCAB) - 2 - len(UNAVAILABLE)
    assert not any(eligible.allows(item) for item in capped)
    assert not capped & {item for item, _ in ranker().without_model(eligible, query.k)}
    bans = eligible.index_bans(model, np.zeros(0, np.int64))
    assert {model.rows["i3"], model.rows["i5"]} <= set(bans.tolist())
