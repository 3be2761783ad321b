"""ModelAdmin's lifecycle calls over gRPC: rollback and the activation history, retention,
a server starting with a broken active bundle, the training lock, cancelling, the
deployment-wide stats, and the catalogue calls the console uses."""

from __future__ import annotations

import shutil
import threading

import grpc
import pytest

from shared import synthetic
from shared.proto.recserve.v1 import admin_pb2
from shared.proto.recserve.v1 import recommender_pb2 as pb
from shared.storage import item_store, model_store
from shared.storage.engine import session_scope
from shared.storage.tables import Item, ModelStatus
from tests.conftest import TINY_SPEC
from tests.support.models import register_copy
from tests.support.waits import eventually


def copy_version(server, *, status: ModelStatus = ModelStatus.READY) -> int:
    """Registers a new version whose bundle is a copy of version 1's."""
    settings = server.admin.settings
    with session_scope(server.engine) as s:
        v1 = model_store.get_model_version(s, version=1)
        count = len(model_store.list_model_versions(s, limit=1000))
    name = f"copy-{count + 1}"
    shutil.copytree(settings.bundle_path(v1.artifact_path), settings.bundles_dir / name)
    return register_copy(server.engine, artifact_path=name, status=status)


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_rollback_and_activation_history(client, server) -> None:
    v2 = copy_version(server)
    await client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2))
    rolled = await client.admin.RollbackModel(admin_pb2.RollbackModelRequest())
    assert rolled.version == 1 and rolled.status == "active"
    assert server.registry.current.version == 1
    history = await client.admin.ListActivations(admin_pb2.ListActivationsRequest())
    assert [(a.version, a.previous_version, a.reason) for a in history.activations] == [
        (1, v2, "RollbackModel"),
        (v2, 1, "ActivateModel"),
        (1, 0, "promoted by job 1"),
    ]
    details = await client.admin.GetModelDetails(admin_pb2.GetModelRequest(version=v2))
    assert details.problem == "" and all(f.ok for f in details.files)
    assert {f.name for f in details.files} >= {"model.onnx", "vocab.json", "config.json"}
    assert [a.reason for a in details.activations] == ["ActivateModel"]


async def test_hot_swap_pre_encodes_recent_users_for_the_incoming_model(client, server) -> None:
    core = server.parts
    users = [f"u{n:05d}" for n in range(1, 9)]
    before = {}
    for user in users:
        before[user] = await client.recommender.Recommend(pb.RecommendRequest(user_id=user, k=5))
    v2 = copy_version(server)
    await client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2))
    misses = core.states.misses
    for user in users:
        got = await client.recommender.Recommend(pb.RecommendRequest(user_id=user, k=5))
        assert got.model_version == v2
        # The same weights: the pre-encoded state ranks exactly as the cold run did.
        assert [i.item_id for i in got.items] == [i.item_id for i in before[user].items]
        assert [i.score for i in got.items] == pytest.approx(
            [i.score for i in before[user].items], rel=1e-4
        )
    assert core.states.misses == misses, "every returning user was served from a warm state"


async def test_pre_encoding_looks_up_histories_off_the_event_loop(
    client, server, monkeypatch
) -> None:
    """The per-event work of a swap's pre-encoding (every recent user's history to model
    rows) runs with the model's runs, not on the event loop that serves requests."""
    import server.pipeline.prewarm as prewarm_module

    users = [f"u{n:05d}" for n in range(1, 6)]
    for user in users:
        await client.recommender.Recommend(pb.RecommendRequest(user_id=user, k=5))
    loop_thread = threading.get_ident()
    lookups: list[int] = []
    known_rows = prewarm_module.known_rows

    def recording(model, items):
        lookups.append(threading.get_ident())
        return known_rows(model, items)

    monkeypatch.setattr(prewarm_module, "known_rows", recording)
    v2 = copy_version(server)
    await client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2))
    assert len(lookups) >= len(users)
    assert loop_thread not in lookups


async def test_feedback_during_pre_encoding_is_encoded_for_the_incoming_model(
    client, server, monkeypatch
) -> None:
    """A user whose history changes while a swap's pre-encoding runs (it takes seconds
    under load) is encoded again for the incoming model, and is served warm after it."""
    import asyncio

    import server.pipeline.prewarm as prewarm_module

    core = server.parts
    users = [f"u{n:05d}" for n in range(1, 6)]
    for user in users:
        await client.recommender.Recommend(pb.RecommendRequest(user_id=user, k=5))
    started, go = threading.Event(), threading.Event()
    encode_cached = prewarm_module.encode_cached

    def held(model, chunk):
        started.set()
        go.wait(30)
        return encode_cached(model, chunk)

    monkeypatch.setattr(prewarm_module, "encode_cached", held)
    v2 = copy_version(server)
    activation = asyncio.ensure_future(
        client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2))
    )
    assert await asyncio.to_thread(started.wait, 30), "the pre-encoding started"
    await client.recommender.Feedback(
        pb.FeedbackRequest(
            events=[pb.Event(event_id="mid-swap", user_id=users[0], item_id="i000-001")]
        )
    )

    def staged() -> bool:  # the incoming model's state for the new history
        staging = core.feedback.prewarm._incoming
        return bool(staging and users[0] in staging.states)

    await eventually(staged, "the new history encoded by the incoming model", timeout=10)
    go.set()
    await activation
    misses = core.states.misses
    got = await client.recommender.Recommend(pb.RecommendRequest(user_id=users[0], k=5))
    assert got.model_version == v2
    assert core.states.misses == misses, "the changed user was served from a warm state"


async def test_rollback_with_nothing_before_is_refused(client) -> None:
    error = await rpc_error(client.admin.RollbackModel(admin_pb2.RollbackModelRequest()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "replaced no other version" in error.details()


async def test_activation_checks_the_recorded_checksum(client, server) -> None:
    """A bundle whose files are consistent but not the ones registered is refused."""
    v2 = copy_version(server)
    with session_scope(server.engine) as s:
        model = model_store.get_model_version(s, version=v2)
        model.checksum = "0" * 64
        s.add(model)
    error = await rpc_error(client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not the one recorded" in error.details()
    details = await client.admin.GetModelDetails(admin_pb2.GetModelRequest(version=v2))
    assert "recorded at registration" in details.problem


async def test_bundle_names_outside_the_bundle_are_refused(client, server) -> None:
    import json

    v2 = copy_version(server)
    directory = server.admin.settings.bundles_dir / f"copy-{v2}"
    sums = json.loads((directory / "checksums.json").read_text())
    sums["../../recserve.db"] = "0" * 64
    (directory / "checksums.json").write_text(json.dumps(sums))
    error = await rpc_error(client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=v2)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "plain file names inside the bundle directory" in error.details()


async def test_prune_keeps_active_previous_and_newest_ready(client, server) -> None:
    versions = [copy_version(server) for _ in range(4)]  # 2..5, all ready
    await client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=versions[0]))
    plan = await client.admin.PruneModels(admin_pb2.PruneModelsRequest(keep=1, dry_run=True))
    # Active: 2; previous: 1; newest ready: 5. Versions 3 and 4 go.
    assert list(plan.pruned) == [versions[1], versions[2]] and plan.freed_bytes > 0
    assert (server.admin.settings.bundles_dir / f"copy-{versions[1]}").is_dir(), "dry run"
    done = await client.admin.PruneModels(admin_pb2.PruneModelsRequest(keep=1))
    assert list(done.pruned) == list(plan.pruned)
    for version in done.pruned:
        assert not (server.admin.settings.bundles_dir / f"copy-{version}").exists()
    listing = await client.admin.ListModels(admin_pb2.ListModelsRequest())
    statuses = {m.version: m.status for m in listing.models}
    assert statuses == {
        1: "retired",
        versions[0]: "active",
        versions[1]: "pruned",
        versions[2]: "pruned",
        versions[3]: "ready",
    }
    error = await rpc_error(
        client.admin.ActivateModel(admin_pb2.ActivateModelRequest(version=versions[1]))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_server_with_a_broken_active_bundle_serves_the_newest_good_one(settings) -> None:
    from server.app import start_server
    from shared.storage.engine import make_engine

    engine = make_engine(settings.db_url)
    broken = register_copy(engine, artifact_path="missing-bundle")
    with session_scope(engine) as s:
        model_store.activate_model(s, version=broken, reason="test")
    engine.dispose()
    running = await start_server(settings)
    try:
        assert running.registry.current.version == 1
        stats = running.admin.server_stats()
        assert stats.serving_version == 1 and stats.configured_version == 2
        assert "active version 2 cannot be served here" in stats.note
        assert "serving version 1, the newest that loads" in stats.note
    finally:
        await running.stop(0)


async def test_start_training_holds_the_lock_and_cancel_releases_it(client) -> None:
    first = await client.admin.StartTraining(admin_pb2.StartTrainingRequest())
    error = await rpc_error(client.admin.StartTraining(admin_pb2.StartTrainingRequest()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"training job {first.id} is queued" in error.details()
    cancelled = await client.admin.CancelJob(admin_pb2.CancelJobRequest(id=first.id))
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    again = await client.admin.CancelJob(admin_pb2.CancelJobRequest(id=first.id))
    assert again.status == "cancelled"
    second = await client.admin.StartTraining(admin_pb2.StartTrainingRequest())
    assert second.id == first.id + 1 and second.trigger == "manual"
    missing = await rpc_error(client.admin.CancelJob(admin_pb2.CancelJobRequest(id=999)))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_finished_jobs_cannot_be_cancelled(client) -> None:
    error = await rpc_error(client.admin.CancelJob(admin_pb2.CancelJobRequest(id=1)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already finished" in error.details()


async def test_stats_carry_series_and_every_replica(client, server, settings) -> None:
    from server.app import start_server

    other = await start_server(settings)  # a second replica on the same database
    try:
        await client.recommender.Recommend(pb.RecommendRequest(user_id="u00001"))
        await server.deployment.report()
        stats = await client.admin.GetServerStats(admin_pb2.GetServerStatsRequest())
        assert len(stats.series) == 120
        assert stats.series[-1].at_ms > stats.series[0].at_ms
        ids = {r.replica_id for r in stats.replicas}
        assert {stats.replica_id, other.deployment.replica_id} <= ids
        for replica in stats.replicas:
            assert replica.alive and replica.health == "SERVING" and replica.serving_version == 1
    finally:
        await other.stop(0)
    await server.deployment.report()
    stats = await client.admin.GetServerStats(admin_pb2.GetServerStatsRequest())
    assert other.deployment.replica_id not in {r.replica_id for r in stats.replicas}, (
        "a replica that stops removes itself"
    )


async def test_user_history_items_and_titles(client, server) -> None:
    with session_scope(server.engine) as s:
        item_store.upsert_items(
            s,
            items=[
                Item(item_id=i.item_id, title=i.title, labels=i.labels)
                for i in synthetic.catalogue(TINY_SPEC)
            ],
        )
    history = await client.admin.GetUserHistory(
        admin_pb2.GetUserHistoryRequest(user_id="u00003", limit=5)
    )
    assert len(history.events) == 5
    assert all(e.title.startswith("Topic ") and e.timestamp_ms > 0 for e in history.events)
    times = [e.timestamp_ms for e in history.events]
    assert times == sorted(times), "oldest first"
    found = await client.admin.ListItems(admin_pb2.ListItemsRequest(query="PART 10"))
    assert {i.title for i in found.items} == {f"Topic {t} part 10" for t in range(4)}
    exact = await client.admin.ListItems(admin_pb2.ListItemsRequest(item_ids=["i001-002", "nope"]))
    assert [i.item_id for i in exact.items] == ["i001-002"]
    ranked = await client.recommender.Recommend(
        pb.RecommendRequest(user_id="u00003", k=3, include_titles=True)
    )
    assert all(i.title.startswith("Topic ") for i in ranked.items)
    plain = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00003", k=3))
    assert all(i.title == "" for i in plain.items), "titles only when asked for"


async def test_hiding_an_item_takes_it_out_of_recommendations(client, server) -> None:
    top = (
        (await client.recommender.Recommend(pb.RecommendRequest(user_id="u00005", k=1)))
        .items[0]
        .item_id
    )
    answer = await client.admin.SetItemAvailability(
        admin_pb2.SetItemAvailabilityRequest(item_ids=[top], available=False)
    )
    assert answer.updated == 1
    hidden = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00005", k=10))
    assert top not in [i.item_id for i in hidden.items]
    listed = await client.admin.ListItems(admin_pb2.ListItemsRequest(unavailable_only=True))
    assert [(i.item_id, i.available) for i in listed.items] == [(top, False)]
    await client.admin.SetItemAvailability(
        admin_pb2.SetItemAvailabilityRequest(item_ids=[top], available=True)
    )
    back = await client.recommender.Recommend(pb.RecommendRequest(user_id="u00005", k=1))
    assert back.items[0].item_id == top


async def test_model_only_items_are_listed_for_the_operator(client) -> None:
    found = await client.admin.ListItems(admin_pb2.ListItemsRequest(query="i000-00"))
    assert len(found.items) == 10
    assert all(not i.in_catalogue and i.available for i in found.items)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (admin_pb2.SetItemAvailabilityRequest(), "item_ids"),
        (admin_pb2.SetItemAvailabilityRequest(item_ids=[""]), "item_ids[0]"),
        (admin_pb2.GetUserHistoryRequest(), "user_id"),
        (admin_pb2.ListItemsRequest(limit=5000), "limit"),
        (admin_pb2.PruneModelsRequest(keep=-1), "keep"),
        (admin_pb2.CancelJobRequest(), "id"),
    ],
)
@pytest.mark.asyncio(loop_scope="module")
async def test_bad_admin_input_names_the_field(module_client, request_, field) -> None:
    client = module_client
    method = {
        admin_pb2.SetItemAvailabilityRequest: client.admin.SetItemAvailability,
        admin_pb2.GetUserHistoryRequest: client.admin.GetUserHistory,
        admin_pb2.ListItemsRequest: client.admin.ListItems,
        admin_pb2.PruneModelsRequest: client.admin.PruneModels,
        admin_pb2.CancelJobRequest: client.admin.CancelJob,
    }[type(request_)]
    error = await rpc_error(method(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}:")
