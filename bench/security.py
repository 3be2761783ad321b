"""`make security`: every attack of the secure-defaults and integrity work, against real
processes.

Each row is one attack on a `recserve serve` child process (or the deploy files, or the
command line), the outcome it must have, and the outcome observed. Prints a table,
writes JSON (``bench-results/security.json``) and exits 1 if any row fails.

    python -m bench.security [--fast] [--data-dir DIR] [--output FILE]

``--fast`` runs only the rows that take seconds (CI runs them through
tests/test_security_bench.py); the others (the idle-stream timeout at its production
default, the memory and latency rows under the label and explanation attacks) run in
`make security`. The servers run with production limits, except where a row says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import ServerProcess, rss_mb
from shared.config import ServerSettings, Settings
from shared.proto.recserve.v1 import admin_pb2, admin_pb2_grpc, recommender_pb2_grpc
from shared.proto.recserve.v1 import recommender_pb2 as pb

PRODUCTION = ServerSettings()
READ, WRITE, ADMIN = "frontend-read-secret", "ingest-write-secret", "operator-admin-secret"
TOKENS = {
    "SERVER__READ_TOKENS": f'["frontend={READ}"]',
    "SERVER__WRITE_TOKENS": f'["ingest={WRITE}"]',
    "SERVER__ADMIN_TOKENS": f'["operator={ADMIN}"]',
}


@dataclass
class Row:
    attack: str
    expected: str
    observed: str = ""
    passed: bool = False
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Attack:
    name: str
    expected: str
    fast: bool
    run: Callable[[Lab], tuple[str, bool, dict[str, Any]]]


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def own_channel(target: str) -> grpc.aio.Channel:
    """A channel on a connection of its own (gRPC otherwise shares one per target)."""
    return grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


async def silence(stop: asyncio.Event):  # type: ignore[no-untyped-def]
    """A request stream that sends nothing until ``stop``."""
    await stop.wait()
    return
    yield


async def until_done(tasks: list[asyncio.Future[Any]], count: int, *, timeout: float) -> None:
    """Until ``count`` of ``tasks`` are done, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pending = {t for t in tasks if not t.done()}
    while len(tasks) - len(pending) < count and pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        _, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)


def code_of(error: BaseException | None) -> str:
    if error is None:
        return "OK"
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    return type(error).__name__


async def outcome(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK"


class Lab:
    """The processes the attacks run against, started on first use."""

    def __init__(self, data_dir: Path, users: list[str]) -> None:
        self.data_dir = data_dir
        self.settings = Settings(data_dir=data_dir)
        self.users = users
        self._guarded: ServerProcess | None = None
        self._open: ServerProcess | None = None

    def process_env(self, extra: dict[str, str]) -> dict[str, str]:
        return {f"RECSERVE_{k}": v for k, v in extra.items()}

    @property
    def guarded(self) -> ServerProcess:
        """A server with a named token for every role and the production limits."""
        if self._guarded is None:
            self._guarded = ServerProcess(self.settings, "guarded", env=self.process_env(TOKENS))
        return self._guarded

    @property
    def open(self) -> ServerProcess:
        """A loopback server with no authentication (the embedded default's shape)."""
        if self._open is None:
            self._open = ServerProcess(self.settings, "open")
        return self._open

    def close(self) -> None:
        for server in (self._guarded, self._open):
            if server is not None:
                server.stop()


# --- authentication and authorisation ---------------------------------------------------


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


# --- integrity ------------------------------------------------------------------------


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


# --- idle and slow clients --------------------------------------------------------------


def idle_streams(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """100 idle FeedbackStreams with a valid write token over two connections, 20 unary
    calls whose body never comes; then a Recommend with a valid read token."""
    target = lab.guarded.target

    async def attempt() -> dict[str, Any]:
        stop = asyncio.Event()
        channels = [own_channel(target) for _ in range(3)]
        held = []
        try:
            for n in range(100):
                stub = recommender_pb2_grpc.RecommenderStub(channels[n % 2])
                held.append(stub.FeedbackStream(silence(stop), metadata=bearer(WRITE)))
            for n in range(20):
                bodiless = channels[n % 2].stream_unary(
                    "/recserve.v1.Recommender/Recommend",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=pb.RecommendResponse.FromString,
                )
                held.append(bodiless(silence(stop), metadata=bearer(READ)))
            tasks = [asyncio.ensure_future(call) for call in held]
            expected_refused = 100 - PRODUCTION.max_streams_per_caller
            await until_done(tasks, expected_refused, timeout=10)
            refused = [code_of(t.exception()) for t in tasks if t.done()]
            recommender = recommender_pb2_grpc.RecommenderStub(channels[2])
            started = time.perf_counter()
            code = await outcome(
                recommender.Recommend(
                    pb.RecommendRequest(user_id=lab.users[0], k=5),
                    metadata=bearer(READ),
                    timeout=1.0,
                )
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            health = health_pb2_grpc.HealthStub(channels[2])
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            return {
                "recommend": code,
                "recommend_ms": elapsed_ms,
                "health": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status),
                "streams_refused": refused.count("RESOURCE_EXHAUSTED"),
                "still_held": sum(not t.done() for t in tasks),
            }
        finally:
            stop.set()
            for call in held:
                call.cancel()
            for channel in channels:
                await channel.close()

    figures = asyncio.run(attempt())
    passed = (
        figures["recommend"] == "OK"
        and figures["recommend_ms"] < 1000
        and figures["health"] == "SERVING"
    )
    observed = (
        f"Recommend {figures['recommend']} in {figures['recommend_ms']:.0f} ms; "
        f"{figures['streams_refused']} streams over the caller cap refused; health "
        f"{figures['health']}"
    )
    return observed, passed, figures


def idle_stream_timeout(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    async def attempt() -> tuple[str, float]:
        stop = asyncio.Event()
        async with own_channel(lab.guarded.target) as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            started = time.perf_counter()
            code = await outcome(stub.FeedbackStream(silence(stop), metadata=bearer(WRITE)))
            stop.set()
            return code, time.perf_counter() - started

    code, seconds = asyncio.run(attempt())
    limit = PRODUCTION.stream_idle_timeout_s
    passed = code == "DEADLINE_EXCEEDED" and limit <= seconds < limit + 2
    return f"{code} after {seconds:.1f} s", passed, {"code": code, "seconds": seconds}


# --- memory and admission under hostile traffic -------------------------------------------


def server_stats(target: str) -> admin_pb2.ServerStats:
    with grpc.insecure_channel(target) as channel:
        return admin_pb2_grpc.ModelAdminStub(channel).GetServerStats(
            admin_pb2.GetServerStatsRequest(), timeout=10
        )


async def label_attack(target: str, requests: int, users: list[str]) -> dict[str, int]:
    """``requests`` Recommends, each with a label no other request sent."""
    codes: dict[str, int] = {}
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for start in range(0, requests, 16):
            calls = [
                stub.Recommend(
                    pb.RecommendRequest(
                        user_id=users[n % len(users)], k=10, include_labels=[f"attack-{n:06d}"]
                    ),
                    timeout=10,
                )
                for n in range(start, min(requests, start + 16))
            ]
            for code in await asyncio.gather(*map(outcome, calls)):
                codes[code] = codes.get(code, 0) + 1
    return codes


async def explained_attack(
    target: str, batches: int, per_batch: int, users: list[str]
) -> dict[str, int]:
    codes: dict[str, int] = {}
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for b in range(batches):
            requests = [
                pb.RecommendRequest(user_id=users[(b * per_batch + n) % len(users)], explain=True)
                for n in range(per_batch)
            ]
            code = await outcome(
                stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
            )
            codes[code] = codes.get(code, 0) + 1
    return codes


async def warm(target: str, users: list[str]) -> None:
    """Every stored user asked once, and one explained batch: the footprint a server
    serving these users has anyway (histories, states, the model's run memory)."""
    async with own_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        for start in range(0, len(users), 16):
            calls = [
                stub.Recommend(pb.RecommendRequest(user_id=u, k=10), timeout=30)
                for u in users[start : start + 16]
            ]
            await asyncio.gather(*map(outcome, calls))
    await explained_attack(target, 2, PRODUCTION.max_explained_per_call, users)


ATTACK_GROWTH_MB = 64.0
"""The most RSS the label and explanation attacks may add to a warm server: 10,000
label entries (each at most the label's rows) and the explanation runs' buffers."""


def memory_under_attack(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    server = lab.open
    asyncio.run(warm(server.target, lab.users))
    before = rss_mb(server.proc.pid)
    labels = asyncio.run(label_attack(server.target, 12_000, lab.users))
    explained = asyncio.run(
        explained_attack(server.target, 20, PRODUCTION.max_explained_per_call, lab.users)
    )
    over = asyncio.run(
        explained_attack(server.target, 1, PRODUCTION.max_explained_per_call + 1, lab.users)
    )
    after = rss_mb(server.proc.pid)
    stats = server_stats(server.target)
    figures = {
        "rss_before_mb": before,
        "rss_after_mb": after,
        "label_cache_entries": stats.label_cache_entries,
        "history_cache_bytes": stats.history_cache_bytes,
        "label_requests": labels,
        "explained_batches": explained,
        "over_the_cap": over,
    }
    passed = (
        stats.label_cache_entries <= PRODUCTION.label_cache_max_entries
        and stats.history_cache_bytes <= PRODUCTION.history_cache_max_bytes
        and after - before <= ATTACK_GROWTH_MB
        and set(labels) <= {"OK", "RESOURCE_EXHAUSTED"}
        and set(explained) <= {"OK", "RESOURCE_EXHAUSTED"}
        and over == {"INVALID_ARGUMENT": 1}
    )
    observed = (
        f"RSS of a warm server {before:.0f} -> {after:.0f} MB; "
        f"{stats.label_cache_entries:,} label entries "
        f"after 12,000 labels; 20 explained batches {explained}; 33 explained {over}"
    )
    return observed, passed, figures


def p99_under_attack(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """Closed-loop plain traffic, alone and beside the label and explanation attacks,
    interleaved, three rounds; the median of the p99 ratios."""
    from bench.loadgen import LoadSpec, run_load, summarize

    server = lab.open
    items = [str(i) for i in range(1, 3000)]

    def plain(duration: float) -> dict[str, Any]:
        spec = LoadSpec(
            target=server.target,
            traffic="mixed",
            loop="closed",
            concurrency=4,
            duration_s=duration,
            items=tuple(items),
            users=tuple(lab.users),
            feedback_share=0.0,
        )
        return summarize(run_load([spec]))

    def attacked(duration: float) -> dict[str, Any]:
        async def attack(stop_at: float) -> None:
            n = 0
            while time.monotonic() < stop_at:
                await label_attack(server.target, 64, lab.users[n % 50 :])
                await explained_attack(
                    server.target, 1, PRODUCTION.max_explained_per_call, lab.users
                )
                n += 1

        import threading

        stop_at = time.monotonic() + duration + 1.0
        thread = threading.Thread(target=lambda: asyncio.run(attack(stop_at)), daemon=True)
        thread.start()
        result = plain(duration)
        thread.join()
        return result

    rounds = []
    for _ in range(3):
        base = plain(6.0)
        under = attacked(6.0)
        rounds.append(
            {
                "baseline_p99_ms": base["p99_ok_ms"],
                "attack_p99_ms": under["p99_ok_ms"],
                "ratio": under["p99_ok_ms"] / max(base["p99_ok_ms"], 1e-9),
                "attack_errors": under["errors"],
            }
        )
    ratio = statistics.median(r["ratio"] for r in rounds)
    observed = (
        "p99 ratios " + ", ".join(f"{r['ratio']:.2f}" for r in rounds) + f" (median {ratio:.2f})"
    )
    return observed, ratio <= 2.0, {"rounds": rounds, "median_ratio": ratio}


def history_budget(lab: Lab) -> tuple[str, bool, dict[str, Any]]:
    """A server with a 4 MiB history budget, asked for every stored user."""
    budget = 4 * 2**20
    server = ServerProcess(lab.settings, "small-history", {"history_cache_max_bytes": str(budget)})
    try:

        async def ask() -> None:
            async with own_channel(server.target) as channel:
                stub = recommender_pb2_grpc.RecommenderStub(channel)
                for start in range(0, len(lab.users), 16):
                    calls = [
                        stub.Recommend(pb.RecommendRequest(user_id=u, k=1), timeout=30)
                        for u in lab.users[start : start + 16]
                    ]
                    await asyncio.gather(*map(outcome, calls))

        asyncio.run(ask())
        stats = server_stats(server.target)
    finally:
        server.stop()
    passed = 0 < stats.history_cache_bytes <= budget and stats.cached_users < len(lab.users)
    observed = (
        f"{stats.history_cache_bytes / 2**20:.2f} MiB for {stats.cached_users} of "
        f"{len(lab.users)} users (budget 4 MiB)"
    )
    return observed, passed, {"bytes": stats.history_cache_bytes, "users": stats.cached_users}


ATTACKS = [
    Attack(
        "anonymous calls, only tokens of other roles set",
        "UNAUTHENTICATED everywhere",
        True,
        anonymous_admin,
    ),
    Attack("a token of a lower role", "PERMISSION_DENIED; its own role OK", True, lower_role),
    Attack(
        "bodiless call with a forged token",
        "UNAUTHENTICATED from headers, < 1 s",
        True,
        refused_from_headers,
    ),
    Attack(
        "public listener without authentication",
        "refused to start (TLS alone too)",
        True,
        public_listener,
    ),
    Attack("deploy files", "no literal secret, only gRPC published", True, deploy_files),
    Attack("guessing recommendation ids", "128 random bits each", True, guessable_ids),
    Attack(
        "clicks on another user's list, or an unlisted item", "CTR counts none", True, forged_clicks
    ),
    Attack(
        "a bundle with a planted file",
        "ActivateModel refused, old version serves",
        True,
        planted_bundle,
    ),
    Attack(
        "times past 9999 and int64 extremes",
        "INVALID_ARGUMENT / NOT_FOUND, never INTERNAL",
        True,
        out_of_range_times,
    ),
    Attack(
        "100 idle streams + 20 bodiless unary calls",
        "Recommend OK < 1 s, health SERVING",
        True,
        idle_streams,
    ),
    Attack("an idle FeedbackStream", "DEADLINE_EXCEEDED after 10 s", False, idle_stream_timeout),
    Attack(
        "six concurrent activations",
        "one active version, a true history",
        False,
        concurrent_activations,
    ),
    Attack(
        "a worker paused past its lease, then resumed",
        "its writes refused, one model activated",
        False,
        paused_worker,
    ),
    Attack(
        "12,000 distinct labels, 20 explained batches",
        "caches within bounds, cap enforced",
        False,
        memory_under_attack,
    ),
    Attack("history cache at a 4 MiB budget", "measured size <= budget", False, history_budget),
    Attack("plain traffic beside the attacks", "p99 within 2x of alone", False, p99_under_attack),
]


def run(lab: Lab, *, fast: bool) -> list[Row]:
    rows = []
    for attack in ATTACKS:
        if fast and not attack.fast:
            continue
        row = Row(attack.name, attack.expected)
        started = time.perf_counter()
        try:
            row.observed, row.passed, row.figures = attack.run(lab)
        except Exception as exc:  # a row that cannot run fails, and the others still run
            row.observed, row.passed = f"error: {type(exc).__name__}: {exc}"[:300], False
        row.seconds = time.perf_counter() - started
        rows.append(row)
        mark = "pass" if row.passed else "FAIL"
        print(f"{mark:4}  {row.attack:48}  {row.observed}", flush=True)
    return rows


def prepare_lab(data_dir: Path, users: int) -> Lab:
    """The bench's ML-1M-sized model and stored users (bench/serve.py), or a data folder
    that already holds an active model and users (the tests pass theirs)."""
    from bench import serve

    if (data_dir / "recserve.db").exists() and not (data_dir / "models" / "bench-random").exists():
        from shared.storage import event_store
        from shared.storage.engine import engine_for, session_scope

        engine = engine_for(Settings(data_dir=data_dir))
        with session_scope(engine) as session:
            found = event_store.some_user_ids(session, limit=users)
        engine.dispose()
        return Lab(data_dir, found)
    serve.N_USERS = users
    settings, _, stored = serve.prepare(data_dir, None)
    return Lab(settings.data_dir, stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__)
    parser.add_argument("--fast", action="store_true", help="only the rows that take seconds")
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench/security"))
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=Path("bench-results/security.json"))
    args = parser.parse_args(argv)
    lab = prepare_lab(args.data_dir, args.users)
    try:
        rows = run(lab, fast=args.fast)
    finally:
        lab.close()
    report = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "fast": args.fast,
        "rows": [asdict(row) for row in rows],
        "passed": all(row.passed for row in rows),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    print("\n| attack | expected | observed |\n| --- | --- | --- |")
    for row in rows:
        print(
            f"| {row.attack} | {row.expected} | {'' if row.passed else '**FAIL** '}{row.observed} |"
        )
    print(f"\nwrote {args.output}")
    return 0 if report["passed"] else 1


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
