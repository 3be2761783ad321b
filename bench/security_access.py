"""Attack rows on access and integrity: tokens and roles, listeners, deploy files,
recommendation ids, forged clicks, planted bundles, concurrent activations, a paused
worker and out-of-range values (bench/security.py runs them)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.security_lab import (
    ADMIN,
    READ,
    WRITE,
    Lab,
    bearer,
    outcome,
    own_channel,
    silence,
)
from shared.proto.recserve.v1 import admin_pb2, admin_pb2_grpc, recommender_pb2_grpc
from shared.proto.recserve.v1 import recommender_pb2 as pb


def anonymous_admin(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    async def attempt() -> dict[str, str]:
        async with own_channel(lab.guarded.target) as channel:
            admin = admin_pb2_grpc.ModelAdminStub(channel)
            recommender = recommender_pb2_grpc.RecommenderStub(channel)
            calls = {
                "ListModels": admin.ListModels(admin_pb2.ListModelsRequest()),
                "StartTraining": admin.StartTraining(admin_pb2.StartTrainingRequest()),
                "ActivateModel": admin.ActivateModel(admin_pb2.ActivateModelRequest(version=1)),
                "RollbackModel": admin.RollbackModel(admin_pb2.RollbackModelRequest()),
                "PruneModels": admin.PruneModels(admin_pb2.PruneModelsRequest(keep=0)),
                "UpsertItems": admin.UpsertItems(admin_pb2.UpsertItemsRequest()),
                "Recommend": recommender.Recommend(pb.RecommendRequest(user_id="u1")),
                "Feedback": recommender.Feedback(pb.FeedbackRequest()),
            }
            return {name: await outcome(call) for name, call in calls.items()}

    codes = asyncio.run(attempt())
    passed = set(codes.values()) == {"UNAUTHENTICATED"}
    return f"{sorted(set(codes.values()))} on {len(codes)} methods", passed, codes


def lower_role(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    async def attempt() -> dict[str, str]:
        async with own_channel(lab.guarded.target) as channel:
            admin = admin_pb2_grpc.ModelAdminStub(channel)
            recommender = recommender_pb2_grpc.RecommenderStub(channel)
            return {
                "read→Feedback": await outcome(
                    recommender.Feedback(pb.FeedbackRequest(), metadata=bearer(READ))
                ),
                "write→StartTraining": await outcome(
                    admin.StartTraining(admin_pb2.StartTrainingRequest(), metadata=bearer(WRITE))
                ),
                "read→Recommend": await outcome(
                    recommender.Recommend(
                        pb.RecommendRequest(user_id=lab.users[0]), metadata=bearer(READ)
                    )
                ),
            }

    codes = asyncio.run(attempt())
    passed = codes == {
        "read→Feedback": "PERMISSION_DENIED",
        "write→StartTraining": "PERMISSION_DENIED",
        "read→Recommend": "OK",
    }
    return ", ".join(f"{k} {v}" for k, v in codes.items()), passed, codes


def refused_from_headers(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Unary calls whose body never comes, with a bad token, are refused at once."""

    async def attempt() -> tuple[str, float]:
        stop = asyncio.Event()
        async with own_channel(lab.guarded.target) as channel:
            bodiless = channel.stream_unary(
                "/recserve.v1.Recommender/Feedback",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.FeedbackResponse.FromString,
            )
            started = time.perf_counter()
            code = await outcome(bodiless(silence(stop), metadata=bearer("forged"), timeout=5))
            stop.set()
            return code, time.perf_counter() - started

    code, seconds = asyncio.run(attempt())
    return (
        f"{code} after {seconds * 1000:.0f} ms",
        code == "UNAUTHENTICATED" and seconds < 1,
        {
            "code": code,
            "ms": seconds * 1000,
        },
    )


def public_listener(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    def serve(*extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        environment = {
            **os.environ,
            "RECSERVE_DATA_DIR": str(lab.data_dir),
            "RECSERVE_TELEMETRY__METRICS_PORT": "0",
            **(env or {}),
        }
        done = subprocess.run(
            [sys.executable, "-m", "recserve", "serve", "--host", "0.0.0.0", "--port", "0", *extra],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stderr

    plain, plain_err = serve()
    certificate = lab.data_dir / "security-bench-missing.pem"
    tls_only, tls_err = serve(
        env={
            "RECSERVE_SERVER__TLS_CERT": str(certificate),
            "RECSERVE_SERVER__TLS_KEY": str(certificate),
        }
    )
    passed = plain == 2 and tls_only == 2 and "TLS alone does not" in tls_err
    observed = f"no auth: exit {plain}; TLS only: exit {tls_only}"
    return observed, passed, {"plain": plain_err.strip()[-200:], "tls_only": tls_err.strip()[-200:]}


def deploy_files(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    import yaml

    from recserve.deploy_secrets import compose_problems

    root = Path(__file__).resolve().parent.parent
    problems = compose_problems(yaml.safe_load((root / "deploy" / "compose.yaml").read_text()))
    return ("no problem" if not problems else "; ".join(problems)), not problems, {}


def guessable_ids(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Recommendation ids, as a client sees them: 128 random bits, none repeated."""

    async def collect() -> list[str]:
        async with own_channel(lab.guarded.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            ids = []
            for n in range(200):
                answer = await stub.Recommend(
                    pb.RecommendRequest(user_id=lab.users[n % len(lab.users)], k=3),
                    metadata=bearer(READ),
                )
                ids.append(answer.recommendation_id)
            return ids

    ids = asyncio.run(collect())
    widths = {len(i) for i in ids}
    hexadecimal = all(int(i, 16) >= 0 for i in ids)
    numbers = [int(i, 16) for i in ids]
    steps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    passed = widths == {32} and hexadecimal and len(set(ids)) == len(ids) and len(steps) > 100
    return f"{len(set(ids))} distinct ids of {widths} hex digits, no common step", passed, {}


def forged_clicks(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Events that name a list the sender was not shown, or an item it did not hold,
    do not count toward CTR; the list's own user clicking one of its items does."""
    from worker.online import compute_online_metrics

    async def attack() -> tuple[str, list[str]]:
        async with own_channel(lab.guarded.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            victim = lab.users[0]
            shown = await stub.Recommend(
                pb.RecommendRequest(user_id=victim, k=5), metadata=bearer(READ)
            )
            listed = [item.item_id for item in shown.items]
            rec = shown.recommendation_id
            forged = [
                pb.Event(event_id=f"forged-user-{rec}", user_id=lab.users[1], item_id=listed[0],
                         recommendation_id=rec),
                pb.Event(event_id=f"forged-item-{rec}", user_id=victim, item_id="not-listed",
                         recommendation_id=rec),
            ]  # fmt: skip
            await stub.Feedback(pb.FeedbackRequest(events=forged), metadata=bearer(WRITE))
            other = await stub.Recommend(
                pb.RecommendRequest(user_id=lab.users[2], k=5), metadata=bearer(READ)
            )
            genuine = pb.Event(
                event_id=f"genuine-{other.recommendation_id}",
                user_id=lab.users[2],
                item_id=other.items[0].item_id,
                recommendation_id=other.recommendation_id,
            )
            await stub.Feedback(pb.FeedbackRequest(events=[genuine]), metadata=bearer(WRITE))
            return rec, listed

    def clicked() -> int:
        metrics = compute_online_metrics(lab.settings, window_hours=1)
        return sum(m.clicked for m in metrics if m.arm != "shadow")

    before = clicked()
    rec, _ = asyncio.run(attack())
    time.sleep(1.0)  # the impression log writes every 0.5 s
    counted = clicked() - before
    passed = counted == 1
    return (
        f"{counted} clicked impression counted from 2 forged events and 1 genuine click",
        passed,
        {"rec": rec},
    )


def planted_bundle(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """A bundle with a file its checksums do not list is refused by ActivateModel; the
    served version does not change."""
    import shutil

    from shared.storage import model_store
    from shared.storage.engine import engine_for, session_scope
    from shared.storage.tables import ModelStatus, ModelVersion

    engine = engine_for(lab.settings)
    try:
        with session_scope(engine) as session:
            active = model_store.get_active_model(session)
            assert active is not None
            source = lab.settings.bundle_path(active.artifact_path)
            planted = source.parent / f"planted-{time.monotonic_ns()}"
            shutil.copytree(source, planted)
            (planted / "items.ivf").write_bytes(b"an index nobody listed")
            row = model_store.create_model_version(
                session,
                model=ModelVersion(
                    status=ModelStatus.READY,
                    artifact_path=planted.name,
                    checksum=active.checksum,
                    config=active.config,
                ),
            )
            version, served = int(row.version or 0), int(active.version or 0)
    finally:
        engine.dispose()

    async def attempt() -> tuple[str, str, int]:
        async with own_channel(lab.guarded.target) as channel:
            admin = admin_pb2_grpc.ModelAdminStub(channel)
            try:
                await admin.ActivateModel(
                    admin_pb2.ActivateModelRequest(version=version), metadata=bearer(ADMIN)
                )
                code, details = "OK", ""
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code().name, exc.details() or ""
            answer = await recommender_pb2_grpc.RecommenderStub(channel).Recommend(
                pb.RecommendRequest(user_id=lab.users[0]), metadata=bearer(READ)
            )
            return code, details, answer.model_version

    code, details, serving = asyncio.run(attempt())
    passed = code == "FAILED_PRECONDITION" and "items.ivf" in details and serving == served
    return f"{code} ({details[-80:]}); still serving version {serving}", passed, {}


def register_copies(lab: Lab, count: int) -> list[int]:
    """``count`` ready versions, each a copy of the active bundle (for activation races)."""
    import shutil

    from shared.storage import model_store
    from shared.storage.engine import engine_for, session_scope
    from shared.storage.tables import ModelStatus, ModelVersion

    engine = engine_for(lab.settings)
    versions = []
    try:
        with session_scope(engine) as session:
            active = model_store.get_active_model(session)
            assert active is not None
            source = lab.settings.bundle_path(active.artifact_path)
            for _ in range(count):
                copy = source.parent / f"copy-{time.monotonic_ns()}"
                shutil.copytree(source, copy)
                row = model_store.create_model_version(
                    session,
                    model=ModelVersion(
                        status=ModelStatus.READY,
                        artifact_path=copy.name,
                        checksum=active.checksum,
                        config=active.config,
                    ),
                )
                versions.append(int(row.version or 0))
    finally:
        engine.dispose()
    return versions


def concurrent_activations(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Six ActivateModel calls for six versions at once: one version ends active, and
    the activation history is a chain (each names the one active before it)."""
    from shared.storage import model_store
    from shared.storage.engine import engine_for, session_scope

    versions = register_copies(lab, 6)

    async def race() -> list[str]:
        async with own_channel(lab.guarded.target) as channel:
            admin = admin_pb2_grpc.ModelAdminStub(channel)
            calls = [
                admin.ActivateModel(
                    admin_pb2.ActivateModelRequest(version=v), metadata=bearer(ADMIN)
                )
                for v in versions
            ]
            return list(await asyncio.gather(*map(outcome, calls)))

    codes = asyncio.run(race())
    engine = engine_for(lab.settings)
    try:
        with session_scope(engine) as session:
            statuses = [model_store.get_model_version(session, version=v).status for v in versions]
            history = list(reversed(model_store.list_activations(session, limit=len(versions) + 1)))
    finally:
        engine.dispose()
    chain = all(b.previous_version == a.version for a, b in zip(history, history[1:], strict=False))
    active = sum(1 for status in statuses if status == "active")
    passed = active == 1 and chain and set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    return (
        f"{codes.count('OK')} activations answered OK; {active} version active; "
        f"history a chain: {chain}",
        passed,
        {},
    )


def paused_worker(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """The fencing drill (bench/drill.py): a worker SIGSTOPped past its lease."""
    from bench.drill import drill_fencing

    result = drill_fencing(lab.data_dir / "drills", 1.0)
    failed = [check for check, ok in result.checks.items() if not ok]
    observed = "; ".join(result.checks) if not failed else "failed: " + "; ".join(failed)
    return observed, result.passed, {"checks": result.checks, "notes": result.notes}


def out_of_range_times(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    async def attempt() -> dict[str, str]:
        async with own_channel(lab.guarded.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            admin = admin_pb2_grpc.ModelAdminStub(channel)
            codes = {}
            for value in (253402300800000, 2**63 - 1, -(2**63)):
                event = pb.Event(
                    event_id=f"t-{value}", user_id="u", item_id="i", timestamp_ms=value
                )
                try:
                    await stub.Feedback(pb.FeedbackRequest(events=[event]), metadata=bearer(WRITE))
                    codes[f"timestamp_ms={value}"] = "OK"
                except grpc.aio.AioRpcError as exc:
                    codes[f"timestamp_ms={value}"] = exc.code().name
            biggest = 2**63 - 1
            token = bearer(ADMIN)
            codes["GetJob(2^63-1)"] = await outcome(
                admin.GetJob(admin_pb2.GetJobRequest(id=biggest), metadata=token)
            )
            codes["GetModel(2^63-1)"] = await outcome(
                admin.GetModel(admin_pb2.GetModelRequest(version=biggest), metadata=token)
            )
            return codes

    codes = asyncio.run(attempt())
    times = [v for k, v in codes.items() if k.startswith("timestamp")]
    passed = set(times) == {"INVALID_ARGUMENT"} and {
        codes["GetJob(2^63-1)"],
        codes["GetModel(2^63-1)"],
    } == {"NOT_FOUND"}
    return ", ".join(f"{k} {v}" for k, v in codes.items()), passed, codes
