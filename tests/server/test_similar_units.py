"""SimilarItems' stages alone, on a fake model whose item vectors make the answer known:
no database, no server, no sockets, no sleeps (the unit layer)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from server.pipeline.eligibility import EligibilityPolicy
from server.pipeline.rank import Ranker
from server.pipeline.request import SimilarQuery
from server.pipeline.similar import SimilarItemsService, blend_head
from shared.config import ServerSettings
from shared.model.next_items import NextItems
from shared.wire.errors import InvalidArgument, NotFound, Unavailable

pytestmark = pytest.mark.unit

# Twelve items on a circle, 30 degrees apart: an item's nearest neighbours by inner
# product are the ones beside it, then the next ones out, in both directions.
VOCAB = [f"i{n}" for n in range(12)]
ANGLES = np.radians(np.arange(12) * 30.0)
LABELS = {item: {"even" if n % 2 == 0 else "odd"} for n, item in enumerate(VOCAB)}


class FakeCatalogue:
    def has_labels(self, item_id: str, include: frozenset[str], exclude: frozenset[str]) -> bool:
        labels = LABELS.get(item_id, set())
        return (not include or bool(labels & include)) and not labels & exclude

    def label_rows(self, version: int, rows: dict[str, int], label: str) -> np.ndarray:
        return np.asarray([rows[i] for i in VOCAB if label in LABELS[i]], np.int64)

    async def prepare_labels(self, version: int, rows: dict[str, int], labels: list[str]) -> None:
        return None

    async def titles(self, items: list[str]) -> dict[str, str]:
        return {item: f"Title of {item}" for item in items}


class FakeHistory:
    def __init__(self, seen: dict[str, list[str]]) -> None:
        self.seen = seen
        self.cache = SimpleNamespace(negatives=lambda user: frozenset())

    async def caught_up(self) -> None:
        return None

    async def read(self, query: Any) -> tuple[list[str], int]:
        return list(self.seen.get(query.user_id, [])), 1


class FakeBatcher:
    """The model's encoding of a history, faked: the mean of its items' vectors."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = embeddings
        self.runs = 0

    async def submit(self, rows: np.ndarray) -> Any:
        self.runs += 1
        return SimpleNamespace(state=self.embeddings[rows].mean(axis=0), scores=None)


def fake_model(next_items: NextItems | None = None) -> Any:
    embeddings = np.zeros((len(VOCAB) + 1, 2), np.float32)
    embeddings[1:, 0], embeddings[1:, 1] = np.cos(ANGLES), np.sin(ANGLES)
    return SimpleNamespace(
        batcher=FakeBatcher(embeddings),
        rows={item: n + 1 for n, item in enumerate(VOCAB)},
        version=3,
        unavailable_rows=np.zeros(0, np.int64),
        bundle=SimpleNamespace(
            vocab=VOCAB,
            item_embeddings=embeddings,
            config=SimpleNamespace(max_len=8),
            next_items=next_items,
        ),
        index=None,
        log_share=np.zeros(len(VOCAB) + 1, np.float32),
    )


def service(model: Any = None, seen: dict[str, list[str]] | None = None) -> SimilarItemsService:
    registry = SimpleNamespace(current=model, unavailable=set(), fallback=None)
    catalogue = FakeCatalogue()
    settings = ServerSettings()
    return SimilarItemsService(
        settings,
        registry,  # type: ignore[arg-type]
        FakeHistory(seen or {}),  # type: ignore[arg-type]
        EligibilityPolicy(catalogue, registry),  # type: ignore[arg-type]
        Ranker(settings, registry),  # type: ignore[arg-type]
        catalogue,  # type: ignore[arg-type]
    )


def similar(query: SimilarQuery, next_items: NextItems | None = None, **kwargs: Any) -> Any:
    return asyncio.run(service(fake_model(next_items), **kwargs).similar(query))


def test_the_nearest_items_come_first_and_the_query_item_never() -> None:
    result = similar(SimilarQuery(item_ids=["i0"], k=4))
    ids = [item for item, _ in result.items]
    assert set(ids[:2]) == {"i1", "i11"} and set(ids[2:]) == {"i2", "i10"}
    assert "i0" not in ids and result.model_version == 3
    scores = [score for _, score in result.items]
    assert scores == sorted(scores, reverse=True)


def test_what_viewers_went_on_to_is_blended_with_the_model() -> None:
    """i0 was followed by i6 (the model's farthest item from it) in 40 training sequences
    and by i3 (at right angles) in 2: i6 comes first (40 observations against the model's
    100 x 0.16 for i0's neighbours), then the model's order, which 2 observations do not
    change; the rules still apply."""
    rows = {"i0": 1, "i3": 4, "i6": 7}
    sequences = [[rows["i0"], rows["i6"]]] * 40 + [[rows["i0"], rows["i3"]]] * 2
    flat = np.asarray([r for seq in sequences for r in seq], np.int32)
    starts = np.arange(0, len(flat), 2)
    table = NextItems.count(flat, starts, starts + 2, len(VOCAB) + 1)
    ids = [item for item, _ in similar(SimilarQuery(item_ids=["i0"], k=5), table).items]
    assert ids[0] == "i6" and set(ids[1:3]) == {"i1", "i11"} and set(ids[3:5]) == {"i2", "i10"}
    excluded = similar(SimilarQuery(item_ids=["i0"], k=3, exclude_item_ids=["i6"]), table)
    assert "i6" not in [item for item, _ in excluded.items]
    # Without transitions for the query item, the model alone ranks.
    alone = similar(SimilarQuery(item_ids=["i2"], k=2), table)
    assert {item for item, _ in alone.items} == {"i1", "i3"}


def test_over_the_item_index_the_blend_ranks_its_head_and_the_eligible_followers() -> None:
    model = fake_model()
    state = model.bundle.item_embeddings[1]  # i0's own vector
    head = [("i1", 0.87), ("i11", 0.87), ("i2", 0.5)]
    followers = (np.asarray([7, 6], np.int64), np.asarray([40.0, 30.0], np.float32))  # i6, i5
    eligible = SimpleNamespace(allows=lambda item: item != "i5")
    items = blend_head(model, state, head, followers, eligible, k=3)  # type: ignore[arg-type]
    assert [item for item, _ in items] == ["i6", "i1", "i11"], "i5 is not eligible"
    assert blend_head(model, state, [], followers, eligible, k=3)[0][0] == "i6"  # type: ignore[arg-type]


def test_a_query_is_encoded_once_per_model_version() -> None:
    model = fake_model()
    similar_items = service(model)
    for _ in range(3):
        asyncio.run(similar_items.similar(SimilarQuery(item_ids=["i0"], k=2)))
    assert model.batcher.runs == 1, "the query's encoding is cached"
    model.version = 4
    asyncio.run(similar_items.similar(SimilarQuery(item_ids=["i0"], k=2)))
    assert model.batcher.runs == 2, "a new model version encodes again"


def test_a_cart_is_encoded_as_a_short_history() -> None:
    result = similar(SimilarQuery(item_ids=["i2", "i4"], k=3))
    ids = [item for item, _ in result.items]
    assert ids[0] == "i3", "between the two"
    assert not {"i2", "i4"} & set(ids)


def test_unknown_query_items_are_reported_and_all_unknown_is_not_found() -> None:
    result = similar(SimilarQuery(item_ids=["i0", "new-item"], k=2))
    assert result.unknown_item_ids == ["new-item"]
    with pytest.raises(NotFound, match="item_ids: none of the 1 items is known"):
        similar(SimilarQuery(item_ids=["new-item"]))


def test_without_a_model_it_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="item vectors"):
        asyncio.run(service(None).similar(SimilarQuery(item_ids=["i0"])))


def test_the_users_seen_items_are_left_out_unless_allowed() -> None:
    seen = {"u": ["i1", "i11"]}
    ids = [i for i, _ in similar(SimilarQuery(item_ids=["i0"], k=2, user_id="u"), seen=seen).items]
    assert set(ids) == {"i2", "i10"}
    query = SimilarQuery(item_ids=["i0"], k=2, user_id="u", allow_seen=True)
    assert {i for i, _ in similar(query, seen=seen).items} == {"i1", "i11"}


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        ({"exclude_item_ids": ["i1"]}, lambda item: item != "i1"),
        ({"candidate_item_ids": ["i5", "i6", "i7"]}, lambda item: item in {"i5", "i6", "i7"}),
        ({"include_labels": ["even"]}, lambda item: "even" in LABELS[item]),
        ({"exclude_labels": ["even"]}, lambda item: "even" not in LABELS[item]),
    ],
)
def test_the_eligibility_rules_of_recommend_apply(rule: dict[str, Any], allowed: Any) -> None:
    result = similar(SimilarQuery(item_ids=["i0"], k=12, include_titles=True, **rule))
    ids = [item for item, _ in result.items]
    assert ids and all(allowed(item) for item in ids) and "i0" not in ids
    assert len(ids) == sum(1 for item in VOCAB if item != "i0" and allowed(item))
    assert result.titles[ids[0]] == f"Title of {ids[0]}"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (SimilarQuery(item_ids=[]), "item_ids"),
        (SimilarQuery(item_ids=["i0"] * 21), "item_ids"),
        (SimilarQuery(item_ids=["i0", ""]), "item_ids[1]"),
        (SimilarQuery(item_ids=["i0"], k=-1), "k"),
        (SimilarQuery(item_ids=["i0"], user_id="\x00"), "user_id"),
        (SimilarQuery(item_ids=["i0"], include_labels=["x"] * 101), "include_labels"),
    ],
)
def test_bad_input_names_the_field(query: SimilarQuery, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        similar(query)
    assert caught.value.field == field
