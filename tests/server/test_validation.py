"""Every RPC field: bad input gets INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shared import synthetic
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import event_store
from shared.storage.engine import session_scope
from tests.conftest import TINY_SPEC

TEMPLATE_EVENTS = sum(1 for _ in synthetic.events(TINY_SPEC))
"""What the template database holds: every rejected request must leave it so."""

LONG = "x" * 257
FUTURE = int(time.time() * 1000) + 3 * 86_400_000

RECOMMEND_CASES = [
    (pb.RecommendRequest(user_id="", k=5), "user_id"),
    (pb.RecommendRequest(user_id=LONG, k=5), "user_id"),
    (pb.RecommendRequest(user_id="u", k=-1), "k"),
    (pb.RecommendRequest(user_id="u", k=1001), "k"),
    (pb.RecommendRequest(user_id="u", history=["ok", ""]), "history[1]"),
    (pb.RecommendRequest(user_id="u", history=["h"] * 1001), "history"),
    (pb.RecommendRequest(user_id="u", exclude_item_ids=[LONG]), "exclude_item_ids[0]"),
    (pb.RecommendRequest(user_id="u", exclude_item_ids=["e"] * 10001), "exclude_item_ids"),
    (pb.RecommendRequest(user_id="u", candidate_item_ids=[""]), "candidate_item_ids[0]"),
    (pb.RecommendRequest(user_id="u", candidate_item_ids=["c"] * 10001), "candidate_item_ids"),
]


def _event(**fields: object) -> pb.Event:
    base = {"event_id": "e", "user_id": "u", "item_id": "i"}
    base.update(fields)
    return pb.Event(**base)  # type: ignore[arg-type]


FEEDBACK_CASES = [
    (pb.FeedbackRequest(events=[]), "events"),
    (pb.FeedbackRequest(events=[_event()] * 10001), "events"),
    (pb.FeedbackRequest(events=[_event(event_id="")]), "events[0].event_id"),
    (pb.FeedbackRequest(events=[_event(event_id="e" * 129)]), "events[0].event_id"),
    (pb.FeedbackRequest(events=[_event(), _event(user_id="")]), "events[1].user_id"),
    (pb.FeedbackRequest(events=[_event(user_id=LONG)]), "events[0].user_id"),
    (pb.FeedbackRequest(events=[_event(item_id="")]), "events[0].item_id"),
    (pb.FeedbackRequest(events=[_event(kind="Not A Kind!")]), "events[0].kind"),
    (pb.FeedbackRequest(events=[_event(value=float("nan"))]), "events[0].value"),
    (pb.FeedbackRequest(events=[_event(value=float("inf"))]), "events[0].value"),
    (pb.FeedbackRequest(events=[_event(timestamp_ms=-5)]), "events[0].timestamp_ms"),
    (pb.FeedbackRequest(events=[_event(timestamp_ms=FUTURE)]), "events[0].timestamp_ms"),
    (pb.FeedbackRequest(events=[_event(timestamp_ms=2**63 - 1)]), "events[0].timestamp_ms"),
    (pb.FeedbackRequest(events=[_event(timestamp_ms=-(2**63))]), "events[0].timestamp_ms"),
]


def _field_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, "rich error details are attached"
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return bad.field_violations[0].field


@pytest.mark.parametrize(
    ("request_", "field"), RECOMMEND_CASES, ids=[f for _, f in RECOMMEND_CASES]
)
@pytest.mark.asyncio(loop_scope="module")
async def test_recommend_rejects(module_client, request_, field) -> None:
    client = module_client
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.recommender.Recommend(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()
    assert "accepted" in err.value.details() or "required" in err.value.details()
    assert _field_of(err.value) == field


@pytest.mark.parametrize(("request_", "field"), FEEDBACK_CASES, ids=[f for _, f in FEEDBACK_CASES])
@pytest.mark.asyncio(loop_scope="module")
async def test_feedback_rejects(module_client, module_server, request_, field) -> None:
    client, server = module_client, module_server
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.recommender.Feedback(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field_of(err.value) == field
    with session_scope(server.engine) as session:
        stored = event_store.count_events(session)
    assert stored == TEMPLATE_EVENTS, "nothing of a rejected request reaches the database"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RecommendBatchRequest(), "requests"),
        (pb.RecommendBatchRequest(requests=[pb.RecommendRequest(user_id="u")] * 257), "requests"),
        (
            pb.RecommendBatchRequest(
                requests=[pb.RecommendRequest(user_id="u"), pb.RecommendRequest(user_id="u", k=-1)]
            ),
            "requests[1].k",
        ),
        (
            pb.RecommendBatchRequest(
                requests=[pb.RecommendRequest(user_id="u", history=["", "a"])]
            ),
            "requests[0].history[0]",
        ),
        (
            pb.RecommendBatchRequest(
                requests=[pb.RecommendRequest(user_id=f"u{n}", explain=True) for n in range(33)]
            ),
            "requests",
        ),
    ],
    ids=["empty", "too-many", "k", "history", "explained-beyond-the-cap"],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_recommend_batch_rejects(module_client, request_, field) -> None:
    client = module_client
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.recommender.RecommendBatch(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field_of(err.value) == field
    assert "accepted" in err.value.details() or "required" in err.value.details()


async def test_feedback_stream_rejects_bad_batch(client) -> None:
    async def batches():
        yield pb.FeedbackRequest(events=[_event(event_id="ok-1")])
        yield pb.FeedbackRequest(events=[_event(item_id="")])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.recommender.FeedbackStream(batches())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].item_id" in err.value.details()


ADMIN_CASES = [
    ("GetModel", admin_pb2.GetModelRequest(version=0), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    ("GetModel", admin_pb2.GetModelRequest(version=999), grpc.StatusCode.NOT_FOUND, "999"),
    (
        "ActivateModel",
        admin_pb2.ActivateModelRequest(version=-3),
        grpc.StatusCode.INVALID_ARGUMENT,
        "version",
    ),
    (
        "ActivateModel",
        admin_pb2.ActivateModelRequest(version=999),
        grpc.StatusCode.NOT_FOUND,
        "999",
    ),
    ("GetJob", admin_pb2.GetJobRequest(id=0), grpc.StatusCode.INVALID_ARGUMENT, "id"),
    (
        "UpsertItems",
        admin_pb2.UpsertItemsRequest(
            items=[admin_pb2.CatalogueItem(item_id="x", created_at_ms=253402300800000)]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].created_at_ms",
    ),
    (
        "UpsertItems",
        admin_pb2.UpsertItemsRequest(
            items=[admin_pb2.CatalogueItem(item_id="x", created_at_ms=-(2**63))]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].created_at_ms",
    ),
    (
        "GetJob",
        admin_pb2.GetJobRequest(id=2**63 - 1),
        grpc.StatusCode.NOT_FOUND,
        str(2**63 - 1),
    ),
    (
        "GetModel",
        admin_pb2.GetModelRequest(version=2**63 - 1),
        grpc.StatusCode.NOT_FOUND,
        str(2**63 - 1),
    ),
    ("GetJob", admin_pb2.GetJobRequest(id=12345), grpc.StatusCode.NOT_FOUND, "12345"),
    (
        "ListModels",
        admin_pb2.ListModelsRequest(limit=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    (
        "ListModels",
        admin_pb2.ListModelsRequest(limit=5000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    ("ListJobs", admin_pb2.ListJobsRequest(limit=-2), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    (
        "StartTraining",
        admin_pb2.StartTrainingRequest(params_json="{not json"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "params_json",
    ),
    (
        "StartTraining",
        admin_pb2.StartTrainingRequest(params_json='{"epochs": 0}'),
        grpc.StatusCode.INVALID_ARGUMENT,
        "params_json.epochs",
    ),
    (
        "StartTraining",
        admin_pb2.StartTrainingRequest(params_json='{"bogus": 1}'),
        grpc.StatusCode.INVALID_ARGUMENT,
        "params_json.bogus",
    ),
    (
        "StartTraining",
        admin_pb2.StartTrainingRequest(params_json="[1, 2]"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "params_json",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "needle"),
    ADMIN_CASES,
    ids=[f"{m}-{n}" for m, _, _, n in ADMIN_CASES],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_admin_rejects(module_client, method, request_, code, needle) -> None:
    client = module_client
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(client.admin, method)(request_)
    assert err.value.code() == code
    assert needle in err.value.details()
