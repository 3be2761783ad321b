"""Property-based fuzzing (hypothesis) of every RPC, and of malformed wire bytes, against a
real `recserve serve` process.

For every generated call: no INTERNAL or UNKNOWN; the answers keep their invariants (at
most k items, best first, finite scores, exclusions and candidate sets respected, no
seen item unless allowed); every event of an acknowledged Feedback is in the database at
the end; the process never dies and is SERVING afterwards.

`make test` runs the short profile; `make fuzz` the long one (RECSERVE_FUZZ=long,
about 10,000 calls).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.client import Client, wait_serving
from shared.db import make_engine
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from tests.conftest import TINY_SPEC, make_settings
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(3600)]
LONG = os.environ.get("RECSERVE_FUZZ") == "long"
EXAMPLES = 1620 if LONG else 40  # 7 properties: ~10,000 calls long, ~280 short
settings.register_profile(
    "recserve",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not LONG,
)
settings.load_profile("recserve")

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
ITEMS = [f"i{t:03d}-{p:03d}" for t in range(TINY_SPEC.n_topics) for p in range(10)]
USERS = [f"u{n:05d}" for n in range(TINY_SPEC.n_users)]
LABELS = ["topic-0", "topic-1", "sale"]


class Probe:
    """The server under fuzz, a client, and what it acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = Client(server.target)
        self.acknowledged: set[str] = set()
        self.calls = 0

    def call(self, method, request):
        """The answer, or None for an allowed error; fails on INTERNAL/UNKNOWN."""
        self.calls += 1
        try:
            return method(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            assert code not in FORBIDDEN, (code, exc.details(), request)  # type: ignore[attr-defined]
            assert self.server.proc.poll() is None, "the server died"
            return None


@pytest.fixture(scope="module")
def probe(trained_template: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzz") / "var"
    folder.mkdir()
    shutil.copy(trained_template / "recserve.db", folder / "recserve.db")
    shutil.copytree(trained_template / "models", folder / "models")
    server = ServerProcess(make_settings(folder), "fuzz", SERVER__DEFAULT_DEADLINE_S="20")
    p = Probe(server)
    yield p
    try:
        assert server.proc.poll() is None, "the server died during the fuzzing"
        assert wait_serving(server.target, timeout=10), "not SERVING after the fuzzing"
        engine = make_engine(f"sqlite:///{folder / 'recserve.db'}")
        with engine.connect() as conn:
            from sqlalchemy import text

            stored = {r[0] for r in conn.execute(text("SELECT event_id FROM feedback_event"))}
        engine.dispose()
        missing = p.acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged events are not in the database"
        print(f"fuzzed {p.calls} calls; {len(p.acknowledged)} acknowledged events all stored")
    finally:
        p.client.close()
        server.stop()


hostile_text = st.one_of(
    st.sampled_from(ITEMS + USERS + ["", " ", "\x00", "a\u202eb", "x" * 257, "é" * 200]),
    st.text(max_size=300),
)
ids = st.one_of(st.sampled_from(ITEMS), hostile_text)
id_lists = st.lists(ids, max_size=30)
recommend_requests = st.builds(
    pb.RecommendRequest,
    user_id=st.one_of(st.sampled_from(USERS), hostile_text),
    k=st.integers(-5, 1200),
    history=id_lists,
    exclude_item_ids=id_lists,
    candidate_item_ids=st.one_of(st.just([]), id_lists),
    allow_seen=st.booleans(),
    include_titles=st.booleans(),
    explain=st.booleans(),
    include_labels=st.lists(st.one_of(st.sampled_from(LABELS), hostile_text), max_size=3),
    exclude_labels=st.lists(st.one_of(st.sampled_from(LABELS), hostile_text), max_size=3),
)


def check_answer(request: pb.RecommendRequest, answer: pb.RecommendResponse) -> None:
    k = request.k or 10
    items = [i.item_id for i in answer.items]
    scores = [i.score for i in answer.items]
    assert len(items) <= k
    assert len(set(items)) == len(items), "no item twice"
    assert all(math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True), "best first"
    assert not set(items) & set(request.exclude_item_ids), "exclusions respected"
    if request.candidate_item_ids:
        assert set(items) <= set(request.candidate_item_ids), "candidates respected"
    if request.history and not request.allow_seen:
        assert not set(items) & set(request.history), "seen items not recommended"
    for item in answer.items:
        assert len(item.explanations) <= 3 and all(e.weight > 0 for e in item.explanations)
        if not request.explain:
            assert not item.explanations, "explanations only when asked"
    assert answer.source in (pb.SOURCE_MODEL, pb.SOURCE_POPULARITY_FALLBACK)


@given(request=recommend_requests)
def test_recommend(probe: Probe, request: pb.RecommendRequest) -> None:
    answer = probe.call(probe.client.recommender.Recommend, request)
    if answer is not None:
        check_answer(request, answer)


@given(requests=st.lists(recommend_requests, max_size=6))
def test_recommend_batch(probe: Probe, requests: list[pb.RecommendRequest]) -> None:
    answer = probe.call(
        probe.client.recommender.RecommendBatch, pb.RecommendBatchRequest(requests=requests)
    )
    if answer is not None:
        assert len(answer.responses) == len(requests)
        for request, response in zip(requests, answer.responses, strict=True):
            check_answer(request, response)


valid_events = st.builds(
    pb.Event,
    event_id=st.uuids().map(str),
    user_id=st.sampled_from(USERS),
    item_id=st.sampled_from(ITEMS),
    kind=st.sampled_from(["", "click", "view", "purchase"]),
    value=st.floats(-1e6, 1e6),
    timestamp_ms=st.one_of(st.just(0), st.integers(1, 1_700_000_000_000)),
    recommendation_id=st.one_of(st.just(""), st.uuids().map(lambda u: u.hex)),
)
hostile_events = st.builds(
    pb.Event,
    event_id=st.one_of(st.uuids().map(str), hostile_text),
    user_id=st.one_of(st.sampled_from(USERS), hostile_text),
    item_id=ids,
    kind=st.one_of(st.sampled_from(["", "click", "view", "purchase"]), st.text(max_size=40)),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(0.0)),
    timestamp_ms=st.one_of(st.just(0), st.integers(-(2**62), 2**62)),
    recommendation_id=st.one_of(st.just(""), hostile_text),
)


events = st.one_of(valid_events, hostile_events)
batches_of_events = st.one_of(
    st.lists(valid_events, max_size=20),  # mostly accepted: exercises storage
    st.lists(events, max_size=20),  # mostly refused: exercises validation
)


def acknowledge(probe: Probe, batches: list[list[pb.Event]], answer) -> None:
    if answer is not None:
        probe.acknowledged.update(e.event_id for batch in batches for e in batch)


@given(batch=batches_of_events)
def test_feedback(probe: Probe, batch: list[pb.Event]) -> None:
    answer = probe.call(probe.client.recommender.Feedback, pb.FeedbackRequest(events=batch))
    acknowledge(probe, [batch], answer)
    if answer is not None:
        assert answer.stored + answer.duplicates == len(batch)


@given(
    batches=st.lists(st.lists(st.one_of(valid_events, events), min_size=1, max_size=10), max_size=5)
)
def test_feedback_stream(probe: Probe, batches: list[list[pb.Event]]) -> None:
    answer = probe.call(
        probe.client.recommender.FeedbackStream,
        iter([pb.FeedbackRequest(events=b) for b in batches]),
    )
    acknowledge(probe, batches, answer)


admin_calls = st.one_of(
    st.builds(
        lambda n: ("ListModels", admin_pb2.ListModelsRequest(limit=n)), st.integers(-5, 2000)
    ),
    st.builds(lambda n: ("GetModel", admin_pb2.GetModelRequest(version=n)), st.integers(-3, 5)),
    st.builds(
        lambda n: ("GetModelDetails", admin_pb2.GetModelRequest(version=n)), st.integers(-3, 5)
    ),
    st.builds(
        lambda n: ("ActivateModel", admin_pb2.ActivateModelRequest(version=n)), st.integers(-3, 5)
    ),
    st.just(("RollbackModel", admin_pb2.RollbackModelRequest())),
    st.builds(
        lambda n: ("ListActivations", admin_pb2.ListActivationsRequest(limit=n)),
        st.integers(-5, 2000),
    ),
    st.builds(
        lambda n: ("PruneModels", admin_pb2.PruneModelsRequest(keep=n, dry_run=True)),
        st.integers(-5, 10),
    ),
    st.builds(
        lambda t: ("StartTraining", admin_pb2.StartTrainingRequest(params_json=t)),
        st.one_of(st.text(max_size=80), st.sampled_from(['{"epochs": 0}', "[]", '{"x": 1}', "{"])),
    ),
    st.just(("GetTrainingOptions", admin_pb2.GetTrainingOptionsRequest())),
    st.builds(lambda n: ("ListJobs", admin_pb2.ListJobsRequest(limit=n)), st.integers(-5, 2000)),
    st.builds(lambda n: ("GetJob", admin_pb2.GetJobRequest(id=n)), st.integers(-3, 5)),
    st.builds(lambda n: ("CancelJob", admin_pb2.CancelJobRequest(id=n)), st.integers(-3, 5)),
    st.just(("GetServerStats", admin_pb2.GetServerStatsRequest())),
    st.builds(
        lambda u, n: ("GetUserHistory", admin_pb2.GetUserHistoryRequest(user_id=u, limit=n)),
        st.one_of(st.sampled_from(USERS), hostile_text),
        st.integers(-5, 2000),
    ),
    st.builds(
        lambda q, n, u: (
            "ListItems",
            admin_pb2.ListItemsRequest(query=q, limit=n, unavailable_only=u),
        ),
        hostile_text,
        st.integers(-5, 2000),
        st.booleans(),
    ),
    st.builds(
        lambda i, a: (
            "SetItemAvailability",
            admin_pb2.SetItemAvailabilityRequest(item_ids=i, available=a),
        ),
        id_lists,
        st.just(True),
    ),
    st.builds(
        lambda arms, shadow, share: (
            "SetTrafficSplit",
            admin_pb2.SetTrafficSplitRequest(
                arms=[admin_pb2.TrafficArm(version=v, weight=w) for v, w in arms],
                shadow_version=shadow,
                shadow_share=share,
            ),
        ),
        st.lists(
            st.tuples(st.integers(-2, 4), st.floats(allow_nan=True, allow_infinity=True)),
            max_size=3,
        ),
        st.integers(-1, 4),
        st.floats(-1, 2),
    ),
    st.just(("GetExperiment", admin_pb2.GetExperimentRequest())),
    st.builds(lambda n: ("PromoteArm", admin_pb2.PromoteArmRequest(version=n)), st.integers(-3, 5)),
    st.builds(
        lambda items: ("UpsertItems", admin_pb2.UpsertItemsRequest(items=items)),
        st.lists(
            st.builds(
                admin_pb2.CatalogueItem,
                item_id=ids,
                title=hostile_text,
                labels=st.lists(st.one_of(st.sampled_from(LABELS), hostile_text), max_size=4),
                available=st.just(True),
                created_at_ms=st.integers(-(2**40), 2**42),
            ),
            max_size=5,
        ),
    ),
)


@given(call=admin_calls)
def test_model_admin(probe: Probe, call) -> None:
    method, request = call
    probe.call(getattr(probe.client.admin, method), request)


WIRE_METHODS = [
    ("/recserve.v1.Recommender/Recommend", False),
    ("/recserve.v1.Recommender/RecommendBatch", False),
    ("/recserve.v1.Recommender/Feedback", False),
    ("/recserve.v1.Recommender/FeedbackStream", True),
    ("/recserve.v1.ModelAdmin/ListItems", False),
    ("/recserve.v1.ModelAdmin/StartTraining", False),
    ("/recserve.v1.ModelAdmin/SetTrafficSplit", False),
    ("/recserve.v1.ModelAdmin/UpsertItems", False),
]


@given(method=st.sampled_from(WIRE_METHODS), payload=st.binary(max_size=200))
def test_malformed_wire_bytes(probe: Probe, method, payload: bytes) -> None:
    name, streaming = method
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    channel = probe.client.channel
    if streaming:
        call = channel.stream_unary(name, **identity)
        probe.call(lambda r, timeout: call(iter([r]), timeout=timeout), payload)
    else:
        probe.call(channel.unary_unary(name, **identity), payload)


@given(
    batch=st.lists(st.sampled_from(["dup-a", "dup-b"]), min_size=1, max_size=6),
    user=st.sampled_from(USERS[:3]),
)
def test_repeated_ids_within_a_request(probe: Probe, batch: list[str], user: str) -> None:
    """A repeated id in one request is stored once, and counted once."""
    events_ = [pb.Event(event_id=f"{e}-{user}", user_id=user, item_id=ITEMS[0]) for e in batch]
    answer = probe.call(probe.client.recommender.Feedback, pb.FeedbackRequest(events=events_))
    acknowledge(probe, [events_], answer)
    if answer is not None:
        assert answer.stored <= len(set(batch))
        assert answer.stored + answer.duplicates == len(batch)
