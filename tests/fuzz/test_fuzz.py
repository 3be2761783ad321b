"""Property-based fuzzing (hypothesis) of every RPC, and of malformed wire bytes, against a
real `recserve serve` process.

For every generated call: no INTERNAL or UNKNOWN; the answers keep their invariants (at
most k items, best first, finite scores, exclusions and candidate sets respected, no
seen item unless allowed); every event of an acknowledged Feedback is in the database at
the end; the process never dies and is SERVING afterwards.

`make test` runs the short profile; `make fuzz` the long one (RECSERVE_FUZZ=long,
about 10,000 calls).

RECSERVE_FUZZ_TARGET=HOST:PORT fuzzes a server that is already running (`make run`, say)
instead of starting one; RECSERVE_FUZZ_DATABASE_URL then names its database for the
check that every acknowledged event is stored. Against a target, the admin calls that
would cancel or replace what that server is doing are left out: StartTraining,
CancelJob, ActivateModel, RollbackModel, PruneModels, SetTrafficSplit and PromoteArm.
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
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage.engine import make_engine
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
TARGET = os.environ.get("RECSERVE_FUZZ_TARGET", "")
DISRUPTIVE = {
    "StartTraining",
    "CancelJob",
    "ActivateModel",
    "RollbackModel",
    "PruneModels",
    "SetTrafficSplit",
    "PromoteArm",
}
"""Admin calls left out against a target: they would cancel or replace its work."""
ITEMS = [f"i{t:03d}-{p:03d}" for t in range(TINY_SPEC.n_topics) for p in range(10)]
USERS = [f"u{n:05d}" for n in range(TINY_SPEC.n_users)]
LABELS = ["topic-0", "topic-1", "sale"]


class Probe:
    """The server under fuzz, a client, and what it acknowledged."""

    def __init__(self, target: str, server: ServerProcess | None = None) -> None:
        self.server = server
        self.target = target
        self.client = Client(target)
        self.acknowledged: set[str] = set()
        self.calls = 0

    def alive(self) -> bool:
        if self.server is not None:
            return self.server.proc.poll() is None
        return wait_serving(self.target, timeout=10, require_model=False)

    def call(self, method, request):
        """The answer, or None for an allowed error; fails on INTERNAL/UNKNOWN."""
        self.calls += 1
        try:
            return method(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            assert code not in FORBIDDEN, (code, exc.details(), request)  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAVAILABLE:
                assert self.alive(), "the server died"
            return None


def stored_event_ids(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            from sqlalchemy import text

            return {r[0] for r in conn.execute(text("SELECT event_id FROM feedback_event"))}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def probe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if TARGET:
        yield from _probe_target()
        return
    trained_template: Path = request.getfixturevalue("trained_template")
    folder = tmp_path_factory.mktemp("fuzz") / "var"
    folder.mkdir()
    shutil.copy(trained_template / "recserve.db", folder / "recserve.db")
    shutil.copytree(trained_template / "models", folder / "models")
    server = ServerProcess(make_settings(folder), "fuzz", SERVER__DEFAULT_DEADLINE_S="20")
    p = Probe(server.target, server)
    yield p
    try:
        assert server.proc.poll() is None, "the server died during the fuzzing"
        assert wait_serving(server.target, timeout=10), "not SERVING after the fuzzing"
        missing = p.acknowledged - stored_event_ids(f"sqlite:///{folder / 'recserve.db'}")
        assert not missing, f"{len(missing)} acknowledged events are not in the database"
        print(f"fuzzed {p.calls} calls; {len(p.acknowledged)} acknowledged events all stored")
    finally:
        p.client.close()
        server.stop()


def _probe_target():
    p = Probe(TARGET)
    assert wait_serving(TARGET, timeout=30, require_model=False), f"nothing serves at {TARGET}"
    yield p
    try:
        assert wait_serving(TARGET, timeout=30, require_model=False), "gone after the fuzzing"
        database = os.environ.get("RECSERVE_FUZZ_DATABASE_URL")
        if database:
            missing = p.acknowledged - stored_event_ids(database)
            assert not missing, f"{len(missing)} acknowledged events are not in the database"
        print(f"fuzzed {p.calls} calls against {TARGET}; {len(p.acknowledged)} acknowledged")
    finally:
        p.client.close()


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
    if TARGET and method in DISRUPTIVE:
        return
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


def numeric_extremes(field) -> list[object]:
    """The values at the edges of a numeric field's type (and a few beyond common
    limits): what a careless client or a fuzzer sends."""
    from google.protobuf.descriptor import FieldDescriptor as F

    if field.cpp_type == F.CPPTYPE_INT64:
        return [-(2**63), -(2**31) - 1, -1, 0, 2**31, 2**53 + 1, 253402300800000, 2**63 - 1]
    if field.cpp_type == F.CPPTYPE_INT32:
        return [-(2**31), -1, 0, 2**31 - 1]
    if field.cpp_type == F.CPPTYPE_UINT64:
        return [0, 2**63, 2**64 - 1]
    if field.cpp_type == F.CPPTYPE_UINT32:
        return [0, 2**32 - 1]
    if field.cpp_type in (F.CPPTYPE_DOUBLE, F.CPPTYPE_FLOAT):
        return [float("nan"), float("inf"), -float("inf"), -1e308, 1e308, -0.0]
    return []


def numeric_paths(descriptor, prefix: tuple = ()) -> list[tuple]:
    """Every numeric field of a message, nested ones included, as paths of fields."""
    from google.protobuf.descriptor import FieldDescriptor as F

    paths = []
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        if field.cpp_type == F.CPPTYPE_MESSAGE:
            if len(prefix) < 3:
                paths += numeric_paths(field.message_type, (*prefix, field))
        elif numeric_extremes(field):
            paths.append((*prefix, field))
    return paths


def request_with(message_class, path: tuple, value: object):
    """A request whose field at ``path`` holds ``value`` (repeated messages get one entry)."""

    request = message_class()
    node = request
    for field in path[:-1]:
        if field.is_repeated:
            node = getattr(node, field.name).add()
        else:
            node = getattr(node, field.name)
    last = path[-1]
    if last.is_repeated:
        getattr(node, last.name).append(value)
    else:
        setattr(node, last.name, value)
    return request


def extreme_calls() -> list[tuple[str, str, tuple, object]]:

    calls = []
    for service in (
        pb.DESCRIPTOR.services_by_name["Recommender"],
        admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"],
    ):
        for method in service.methods:
            for path in numeric_paths(method.input_type):
                for value in numeric_extremes(path[-1]):
                    calls.append((service.name, method.name, path, value))
    return calls


EXTREMES = extreme_calls()


def test_every_numeric_field_of_every_rpc_is_covered() -> None:
    fields = {(m, ".".join(f.name for f in p)) for _, m, p, _ in EXTREMES}
    for needed in [
        ("Recommend", "k"),
        ("Feedback", "events.timestamp_ms"),
        ("Feedback", "events.value"),
        ("FeedbackStream", "events.timestamp_ms"),
        ("GetJob", "id"),
        ("ActivateModel", "version"),
        ("UpsertItems", "items.created_at_ms"),
        ("SetTrafficSplit", "arms.version"),
        ("RecommendBatch", "requests.k"),
    ]:
        assert needed in fields, needed


@pytest.mark.parametrize(
    ("service", "method", "path", "value"),
    EXTREMES,
    ids=[f"{m}.{'.'.join(f.name for f in p)}={v!r}" for _, m, p, v in EXTREMES],
)
def test_numeric_extremes_of_every_field(probe: Probe, service, method, path, value) -> None:
    """Each numeric field of each request message at the edges of its type: a client
    error or an answer, never INTERNAL (PostgreSQL's 32-bit columns once were)."""
    from google.protobuf.message_factory import GetMessageClass

    if TARGET and method in DISRUPTIVE:
        return
    if method in ("PruneModels", "StartTraining"):  # would delete bundles or start training
        return
    descriptor = (pb if service == "Recommender" else admin_pb2).DESCRIPTOR
    input_type = descriptor.services_by_name[service].methods_by_name[method].input_type
    request = request_with(GetMessageClass(input_type), path, value)
    stub = probe.client.recommender if service == "Recommender" else probe.client.admin
    if method == "FeedbackStream":
        probe.call(lambda r, timeout: stub.FeedbackStream(iter([r]), timeout=timeout), request)
    else:
        probe.call(getattr(stub, method), request)


def test_held_streams_do_not_stop_the_server(probe: Probe) -> None:
    """64 FeedbackStreams held open without a message, while other calls go on: those
    beyond the caller's stream cap are refused, the rest end when idle, nothing INTERNAL."""
    import threading

    release = threading.Event()

    def silence():
        release.wait(timeout=30)
        return
        yield

    calls = [
        probe.client.recommender.FeedbackStream.future(silence(), timeout=60) for _ in range(64)
    ]
    try:
        for user in USERS[:20]:
            probe.call(probe.client.recommender.Recommend, pb.RecommendRequest(user_id=user, k=3))
    finally:
        release.set()
    for future in calls:
        try:
            future.result(timeout=60)
        except grpc.RpcError as exc:
            assert exc.code() not in FORBIDDEN, exc  # type: ignore[attr-defined]
    assert probe.alive()


async def test_numeric_extremes_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """The same extremes against a server on PostgreSQL (its columns are typed, unlike
    SQLite's): no call ends INTERNAL or UNKNOWN."""
    from google.protobuf.message_factory import GetMessageClass

    from server.app import start_server
    from shared.client import AsyncClient

    settings = make_settings(tmp_path / "var").model_copy(update={"database_url": postgres_url})
    running = await start_server(settings)
    client = AsyncClient(running.target)
    codes: dict[str, int] = {}
    try:
        for service, method, path, value in EXTREMES:
            if method in ("PruneModels", "StartTraining"):
                continue
            descriptor = (pb if service == "Recommender" else admin_pb2).DESCRIPTOR
            input_type = descriptor.services_by_name[service].methods_by_name[method].input_type
            request = request_with(GetMessageClass(input_type), path, value)
            stub = client.recommender if service == "Recommender" else client.admin
            try:
                if method == "FeedbackStream":
                    await stub.FeedbackStream(iter([request]), timeout=30)
                else:
                    await getattr(stub, method)(request, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            assert code not in FORBIDDEN, (method, path[-1].name, value, code)
            codes[code.name] = codes.get(code.name, 0) + 1
    finally:
        await client.close()
        await running.stop(0)
    assert codes.get("INVALID_ARGUMENT", 0) > 0 and codes.get("NOT_FOUND", 0) > 0, codes
