"""The catalogue over gRPC: UpsertItems and ListItems, label filters in Recommend, and
the exploration slot for items the model has never seen."""

from __future__ import annotations

import time

import grpc
import pytest

from server.app import start_server
from shared.client import AsyncClient
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from tests.conftest import TINY_SPEC, make_settings
from tests.server.test_model_lifecycle import rpc_error

ITEMS = [
    f"i{t:03d}-{p:03d}" for t in range(TINY_SPEC.n_topics) for p in range(TINY_SPEC.items_per_topic)
]


def labelled(item_id: str, *extra: str) -> admin_pb2.CatalogueItem:
    topic = f"topic-{int(item_id[1:4])}" if item_id.startswith("i") else "fresh"
    return admin_pb2.CatalogueItem(
        item_id=item_id, title=f"Title of {item_id}", labels=[topic, *extra], available=True
    )


async def test_upsert_and_list_items(client) -> None:
    created = await client.admin.UpsertItems(
        admin_pb2.UpsertItemsRequest(items=[labelled(i) for i in ITEMS[:5]])
    )
    assert (created.created, created.updated) == (5, 0)
    again = await client.admin.UpsertItems(
        admin_pb2.UpsertItemsRequest(
            items=[labelled(ITEMS[0], "sale"), labelled("brand-new"), labelled("brand-new")]
        )
    )
    assert (again.created, again.updated) == (1, 1)
    listed = await client.admin.ListItems(
        admin_pb2.ListItemsRequest(item_ids=[ITEMS[0], "brand-new"])
    )
    by_id = {i.item_id: i for i in listed.items}
    assert list(by_id[ITEMS[0]].labels) == ["topic-0", "sale"]
    assert by_id[ITEMS[0]].in_model and not by_id["brand-new"].in_model
    assert abs(by_id["brand-new"].created_at_ms - time.time() * 1000) < 60_000


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (admin_pb2.CatalogueItem(item_id=""), "items[0].item_id"),
        (admin_pb2.CatalogueItem(item_id="x", labels=["ok", "bad\x00"]), "items[0].labels[1]"),
        (admin_pb2.CatalogueItem(item_id="x", title="t" * 1025), "items[0].title"),
        (admin_pb2.CatalogueItem(item_id="x", created_at_ms=-5), "items[0].created_at_ms"),
        (
            admin_pb2.CatalogueItem(item_id="x", properties=[admin_pb2.Property(key="Bad Key")]),
            "items[0].properties.Bad Key",
        ),
        (
            admin_pb2.CatalogueItem(item_id="x", properties=[admin_pb2.Property(key="year")]),
            "items[0].properties.year",
        ),
        (
            admin_pb2.CatalogueItem(
                item_id="x", properties=[admin_pb2.Property(key="price", number=float("nan"))]
            ),
            "items[0].properties.price",
        ),
    ],
)
async def test_bad_items_name_the_field(client, item, field) -> None:
    error = await rpc_error(client.admin.UpsertItems(admin_pb2.UpsertItemsRequest(items=[item])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(field), error.details()


async def test_item_properties_are_typed_versioned_and_labels(client) -> None:
    def item(brand: str, price: float) -> admin_pb2.CatalogueItem:
        return admin_pb2.CatalogueItem(
            item_id=ITEMS[1],
            title="An anvil",
            available=True,
            properties=[
                admin_pb2.Property(key="brand", categories=[brand]),
                admin_pb2.Property(key="price", number=price),
                admin_pb2.Property(key="summary", text="heavy"),
            ],
        )

    await client.admin.UpsertItems(admin_pb2.UpsertItemsRequest(items=[item("acme", 9.5)]))
    (found,) = (await client.admin.ListItems(admin_pb2.ListItemsRequest(item_ids=[ITEMS[1]]))).items
    assert {p.key: (list(p.categories), p.number, p.text) for p in found.properties} == {
        "brand": (["acme"], 0.0, ""),
        "price": ([], 9.5, ""),
        "summary": ([], 0.0, "heavy"),
    }
    assert list(found.labels) == ["brand:acme"] and found.properties_version == 1
    # One namespace: the categorical property filters Recommend as a label does.
    only = await client.recommender.Recommend(
        pb.RecommendRequest(user_id="u00003", k=5, include_labels=["brand:acme"])
    )
    assert [i.item_id for i in only.items] == [ITEMS[1]]
    await client.admin.UpsertItems(admin_pb2.UpsertItemsRequest(items=[item("zenith", 9.5)]))
    (found,) = (await client.admin.ListItems(admin_pb2.ListItemsRequest(item_ids=[ITEMS[1]]))).items
    assert list(found.labels) == ["brand:zenith"] and found.properties_version == 2


async def test_label_filters(client) -> None:
    await client.admin.UpsertItems(admin_pb2.UpsertItemsRequest(items=[labelled(i) for i in ITEMS]))
    only = await client.recommender.Recommend(
        pb.RecommendRequest(user_id="u00003", k=10, include_labels=["topic-1"])
    )
    assert only.items and all(i.item_id.startswith("i001-") for i in only.items)
    without = await client.recommender.Recommend(
        pb.RecommendRequest(user_id="u00003", k=20, exclude_labels=["topic-1", "topic-2"])
    )
    assert without.items and not any(i.item_id[:4] in ("i001", "i002") for i in without.items)
    error = await rpc_error(
        client.recommender.Recommend(
            pb.RecommendRequest(user_id="u00003", include_labels=["x" * 65])
        )
    )
    assert error.details().startswith("include_labels[0]")


async def test_exploration_slot_places_new_items_until_retraining(data_dir) -> None:
    running = await start_server(make_settings(data_dir, exploration_slots=1))
    client = AsyncClient(running.target)
    try:
        plain = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00005", k=5))
        assert not any(i.explored for i in plain.items), "no new items yet"
        await client.admin.UpsertItems(
            admin_pb2.UpsertItemsRequest(items=[labelled("brand-new"), labelled("newer", "sale")])
        )
        # Recent popularity ranks the new items: "newer" has an event, "brand-new" none.
        await client.recommender.Feedback(
            pb.FeedbackRequest(
                events=[pb.Event(event_id="new-1", user_id="u00099", item_id="newer")]
            )
        )
        running.parts.catalogue._new.clear()  # the recent-popularity refresh, now
        explored = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00005", k=5))
        assert [i.item_id for i in explored.items][:4] == [i.item_id for i in plain.items][:4]
        last = explored.items[-1]
        assert (last.item_id, last.explored) == ("newer", True)
        assert last.score == pytest.approx(plain.items[-1].score, rel=1e-5), "the replaced score"
        scores = [i.score for i in explored.items]
        assert scores == sorted(scores, reverse=True)
        # The user who already has "newer" gets the next new item instead.
        seen = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00099", k=5))
        assert seen.items[-1].item_id == "brand-new" and seen.items[-1].explored
        # Filters apply to the slot too.
        filtered = await client.recommender.Recommend(
            pb.RecommendRequest(user_id="u00005", k=5, exclude_labels=["sale"])
        )
        assert filtered.items[-1].item_id == "brand-new"
    finally:
        await client.close()
        await running.stop(0)
