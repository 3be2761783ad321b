"""Items added after training, on a real server: a model trained with item properties
takes on a catalogue item it never saw (through its ONNX item encoder), scores it, finds
its neighbours, and encodes histories that hold it."""

from __future__ import annotations

import pytest

from server.app import start_server
from shared.client import AsyncClient
from shared.model import properties as props
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store, item_store, job_store
from shared.storage.engine import make_engine, session_scope
from shared.storage.tables import Item, JobCreate
from tests.support.waits import eventually
from worker.pipeline import run_train_job

pytestmark = pytest.mark.e2e


def train_with_properties(settings) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """The template's log with a catalogue of topics (synthetic ids: i<topic>-<n>), and a
    model trained on both and activated: (the items, its version)."""
    engine = make_engine(settings.db_url)
    with session_scope(engine) as s:
        items = [item for item, _ in event_store.item_popularity(s, limit=10**6)]
    entries = [
        Item(item_id=i, available=True, properties=props.checked({"topic": [i[:4]]})) for i in items
    ]
    with session_scope(engine) as s:
        item_store.upsert_items(s, items=entries)
        job = job_store.create_job(
            s, job=JobCreate(params={"epochs": 8, "activate": "always", "id_dropout": 0.5})
        )
    version = run_train_job(settings, int(job.id or 0))
    engine.dispose()
    return items, version


async def test_an_item_added_after_training_is_scored_at_once(settings) -> None:
    items, version = train_with_properties(settings)
    topic = items[0][:4]
    running = await start_server(settings)
    client = AsyncClient(running.target)
    try:
        new = admin_pb2.CatalogueItem(
            item_id="brand-new", title="Brand new", available=True,
            properties=[admin_pb2.Property(key="topic", categories=[topic])],
        )  # fmt: skip
        await client.admin.UpsertItems(admin_pb2.UpsertItemsRequest(items=[new]), timeout=10)

        async def taken_on() -> bool:
            listed = await client.admin.ListItems(
                admin_pb2.ListItemsRequest(item_ids=["brand-new"]), timeout=10
            )
            return bool(listed.items) and listed.items[0].in_model

        await eventually(taken_on, "the new item joins the served model", timeout=30)
        # Scored by the model: asked as a candidate beside trained items, it is ranked.
        same_topic = [i for i in items if i.startswith(topic)][:3]
        others = [i for i in items if not i.startswith(topic)][:3]
        answer = await client.recommender.Recommend(
            pb.RecommendRequest(
                user_id="nobody-yet", k=4, history=same_topic,
                candidate_item_ids=["brand-new", *others],
            ),
            timeout=10,
        )  # fmt: skip
        assert answer.model_version == version and answer.source == pb.SOURCE_MODEL
        ranked = [i.item_id for i in answer.items]
        assert "brand-new" in ranked[:2], ranked  # its topic's items lead the history
        # Its neighbours are its topic's items, by the model's vectors.
        similar = await client.recommender.SimilarItems(
            pb.SimilarItemsRequest(item_ids=["brand-new"], k=5), timeout=10
        )
        assert not similar.unknown_item_ids
        assert sum(i.item_id.startswith(topic) for i in similar.items) >= 3, similar.items
        # A history holding it is encoded (its row is above the trained ones).
        await client.recommender.Feedback(
            pb.FeedbackRequest(
                events=[pb.Event(event_id="e-new", user_id="u-new", item_id="brand-new")]
            ),
            timeout=10,
        )
        after = await client.recommender.Recommend(
            pb.RecommendRequest(user_id="u-new", k=5), timeout=10
        )
        assert after.source == pb.SOURCE_MODEL and len(after.items) == 5
        assert sum(i.item_id.startswith(topic) for i in after.items) >= 3, after.items
    finally:
        await client.close()
        await running.stop(0)
