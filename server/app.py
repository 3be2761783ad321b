"""Starting and running the grpc.aio server.

start_server() builds every component (server/compose.py, the composition root), then
the call guard, the servicers, the standard health service (NOT_SERVING until a model is
loaded) and server reflection (so grpcurl works), and starts them. serve() runs it until
SIGTERM or SIGINT, then drains: health goes NOT_SERVING, in-flight calls get ``grace_s``
to finish. With ``workers`` > 1, that many processes share the port through SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import Engine

from server import metrics
from server.admin import AdminService
from server.admin_servicer import ModelAdminServicer
from server.auth import AccessPolicy, check_listen_safety, server_credentials
from server.backends import create_backend
from server.checkpoints import WalCheckpoints
from server.compose import Components, Parts, build
from server.deployment import Deployment
from server.errors import RpcOptions
from server.guard import CallGuard, CallSlots
from server.history import HistoryCache
from server.http import HttpDoor
from server.loop_watch import LoopWatch
from server.memory import tune_allocator
from server.model_loader import BackendFactory
from server.registry import ModelRegistry
from server.servicers import RecommenderServicer
from server.stats import ServerStats
from server.wire import add_servicer
from shared.config import Settings
from shared.proto.recserve.v1 import (
    admin_pb2,
    recommender_pb2,
)
from shared.storage.engine import migrate
from shared.telemetry import configure_logging, serve_metrics
from shared.wire.errors import InvalidArgument

log = logging.getLogger(__name__)
RECOMMENDER_SERVICE = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"]
RECOMMENDER = RECOMMENDER_SERVICE.full_name
MODEL_ADMIN = ADMIN_SERVICE.full_name


@dataclass
class RunningServer:
    """A started server process's parts, for the entry point (drain and stop) and tests."""

    server: grpc.aio.Server
    port: int
    parts: Components
    admin: AdminService
    deployment: Deployment
    loop_watch: LoopWatch
    checkpoints: WalCheckpoints | None
    """SQLite's WAL checkpoints, off the commit path (None: PostgreSQL, or turned off)."""
    http: HttpDoor | None = None
    """The HTTP/JSON door, when server.http_enabled."""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def registry(self) -> ModelRegistry:
        return self.parts.registry

    @property
    def history(self) -> HistoryCache:
        return self.parts.history

    @property
    def stats(self) -> ServerStats:
        return self.parts.stats

    @property
    def engine(self) -> Engine:
        return self.parts.engine

    async def drain(self, seconds: float) -> None:
        """Health says NOT_SERVING (load balancers stop sending) while calls are still
        served, for ``seconds``."""
        await self.parts.health.drain()
        if seconds:
            await asyncio.sleep(seconds)

    async def stop(self, grace: float | None = None) -> None:
        """Drain (without waiting), stop listening, let calls finish within ``grace``, then
        commit what the feedback writer holds and release everything."""
        parts = self.parts
        await self.drain(0)
        if self.http is not None:
            await self.http.stop()
        await self.server.stop(grace)
        await self.loop_watch.stop()
        parts.invalidations.stop()
        await self.deployment.stop()
        await parts.registry.stop()
        await parts.writer.close()
        if parts.impressions is not None:
            await parts.impressions.close()
        if self.checkpoints is not None:
            await self.checkpoints.stop()
        await parts.new_items.stop()
        await parts.catalogue.stop()
        await parts.rules.stop()
        parts.executor.shutdown(wait=False, cancel_futures=True)
        parts.model_executor.shutdown(wait=False, cancel_futures=True)
        parts.engine.dispose()


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    server = settings.server
    size = server.max_message_mb * 1024 * 1024

    def ms(seconds: float) -> int:
        return int(seconds * 1000) if seconds > 0 else 2**31 - 1  # 0: gRPC's "never"

    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", ms(server.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(server.keepalive_timeout_s)),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_idle_ms", ms(server.max_connection_idle_s)),
        ("grpc.max_connection_age_ms", ms(server.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(server.max_connection_age_grace_s)),
        ("grpc.max_concurrent_streams", server.max_streams_per_connection),
        ("grpc.so_reuseport", 1),
    ]


def access_policy(settings: Settings) -> AccessPolicy:
    """Who may call what, for both doors (server/auth.py); logs what is open to callers
    without a credential."""
    policy = AccessPolicy(settings.server)
    if not policy.authenticated:
        log.warning(
            "no authentication configured: every method is open to anyone who reaches "
            "%s:%s (set server.*_tokens as name=secret)",
            settings.server.host,
            settings.server.port,
        )
    elif policy.anonymous_roles:
        log.warning(
            "anonymous callers have the %s role(s) (server.anonymous_roles)",
            ", ".join(sorted(policy.anonymous_roles)),
        )
    return policy


def listening_server(
    settings: Settings, slots: CallSlots, health_servicer: Any, policy: AccessPolicy
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server bound to settings.server.host:port (port 0 picks a free one), with
    the call guard, health and reflection; refuses a listener that would be open to
    anyone (check_listen_safety). Returns it, not yet started, and its port."""
    check_listen_safety(settings.server)
    credentials = server_credentials(settings.server)
    # No maximum_concurrent_rpcs: gRPC's cap counts streams and health checks too, so a
    # few idle streams could refuse everyone; the guard counts unary calls alone.
    guard = CallGuard(policy, slots, stream_idle_timeout_s=settings.server.stream_idle_timeout_s)
    server = grpc.aio.server(options=grpc_options(settings), interceptors=[guard])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (RECOMMENDER, MODEL_ADMIN, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.server.host}:{settings.server.port}"
    port = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return server, port


def add_services(
    server: grpc.aio.Server, settings: Settings, built: Components, slots: CallSlots
) -> tuple[AdminService, Deployment, dict[str, Any]]:
    """Recommender and ModelAdmin on ``server``, over the built components; returns the
    admin, the deployment and the servicers' methods by gRPC method (for HTTP)."""
    deployment = Deployment(settings, built.engine, built.executor, built.registry, built.health)
    admin = AdminService(
        settings, built.engine, built.executor, built.registry, built.history, built.states,
        built.catalogue, built.stats, deployment, slots, built.rules, built.forget_user,
    )  # fmt: skip
    options = RpcOptions(
        default_deadline_s=settings.server.default_deadline_s,
        access_log=settings.telemetry.access_log,
    )
    recommender = RecommenderServicer(
        built.recommend, built.feedback, built.similar, built.stats, options
    )
    admin_servicer = ModelAdminServicer(admin, options)
    add_servicer(server, recommender, RECOMMENDER_SERVICE)
    add_servicer(server, admin_servicer, ADMIN_SERVICE)
    methods = {
        f"/{service.full_name}/{method.name}": getattr(servicer, method.name)
        for servicer, service in (
            (recommender, RECOMMENDER_SERVICE),
            (admin_servicer, ADMIN_SERVICE),
        )
        for method in service.methods
    }
    return admin, deployment, methods


def http_door(
    settings: Settings,
    policy: AccessPolicy,
    slots: CallSlots,
    methods: dict[str, Any],
    built: Components,
) -> HttpDoor | None:
    """The HTTP/JSON door over the same servicers, policy and slots (when enabled)."""
    if not settings.server.http_enabled:
        return None
    health = built.health
    return HttpDoor(settings.server, policy, slots, methods, lambda: not health.draining)


async def start_server(
    settings: Settings,
    *,
    backend_factory: BackendFactory = create_backend,
    run_migrations: bool = True,
    parts: Parts = Parts(),
) -> RunningServer:
    """Builds every component (server/compose.py), then starts them and listens on
    settings.server.host:port (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    if run_migrations:
        await loop.run_in_executor(None, migrate, settings.db_url)
    checkpoints_s = settings.server.wal_checkpoint_s
    built = build(
        settings,
        backend_factory=backend_factory,
        parts=parts,
        background_checkpoints=checkpoints_s > 0,
    )
    slots = CallSlots(
        max_unary=settings.server.max_concurrent_rpcs,
        max_streams_per_caller=settings.server.max_streams_per_caller,
    )
    policy = access_policy(settings)
    server, port = listening_server(settings, slots, built.health.servicer, policy)
    admin, deployment, methods = add_services(server, settings, built, slots)
    http = http_door(settings, policy, slots, methods, built)
    metrics.watch_queue("feedback_writer", lambda: built.writer.queued_events)
    registry = built.registry
    metrics.watch_queue(
        "batcher", lambda: registry.current.batcher.queued if registry.current else 0
    )
    loop_watch = LoopWatch(built.stats)
    on_sqlite = built.engine.dialect.name == "sqlite"
    checkpoints = (
        WalCheckpoints(built.engine, checkpoints_s) if on_sqlite and checkpoints_s else None
    )
    await built.health.start()
    if built.impressions is not None:
        built.impressions.start()
    if built.listening:
        built.invalidations.start()
    loop_watch.start()
    if checkpoints is not None:
        checkpoints.start()
    await built.catalogue.start()
    await built.rules.start()
    # The active model is loaded before the port opens: with several processes on one
    # port, the kernel hands connections to any listener, and one that listened while
    # still loading would answer from the popularity fallback while its siblings used
    # the model.
    await registry.start()
    await built.new_items.start()
    await server.start()
    if http is not None:
        await http.start()
    await deployment.start(port)
    log.info("recserve listening on %s:%s", settings.server.host, port)
    return RunningServer(server, port, built, admin, deployment, loop_watch, checkpoints, http)


async def serve_forever(settings: Settings, parts: Parts = Parts()) -> None:
    running = await start_server(settings, parts=parts)
    # What start-up made (modules, classes, functions, the first model: about 100,000
    # objects) lives as long as the process: out of the collector's reach, a full
    # collection, which stops the event loop, walks only what serving creates.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info(
        "draining: NOT_SERVING for %ss, then %ss for in-flight calls",
        settings.server.drain_s,
        settings.server.grace_s,
    )
    await running.drain(settings.server.drain_s)
    await running.stop(settings.server.grace_s)


def serve_process(settings: Settings, parts: Parts = Parts()) -> None:
    """One server process, until SIGTERM or SIGINT."""
    configure_logging(settings)
    tune_allocator()
    serve_metrics(settings)
    if settings.telemetry.tracing:
        instrument_tracing()
    with asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner:
        runner.run(serve_forever(settings, parts))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the server process runs on (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise InvalidArgument(
                "server.event_loop", "is uvloop, which is not installed; accepted: auto, asyncio"
            ) from exc
        return None
    return uvloop.new_event_loop


def _nth_process(settings: Settings, n: int) -> Settings:
    """Process n of several on one port: its own metrics port (base + n)."""
    base = settings.telemetry.metrics_port
    if not base:
        return settings
    telemetry = settings.telemetry.model_copy(update={"metrics_port": base + n})
    return settings.model_copy(update={"telemetry": telemetry})


def instrument_tracing() -> None:
    """OpenTelemetry spans for every RPC, exported over OTLP (recserve[tracing])."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "telemetry.tracing needs the tracing extra: pip install 'recserve[tracing]'"
        ) from exc
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()


def serve(settings: Settings) -> None:
    """Runs ``settings.server.workers`` server processes on one port until SIGTERM."""
    workers = settings.server.workers
    if workers == 1:
        serve_process(settings)
        return
    if settings.server.port == 0:
        raise ValueError("server.port must be fixed when server.workers > 1")
    migrate(settings.db_url)
    if not settings.server.intra_op_threads:
        # Split the cores between the processes instead of oversubscribing them.
        threads = max(1, (os.cpu_count() or 1) // workers)
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update={"intra_op_threads": threads})}
        )
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=serve_process, args=(_nth_process(settings, n),)) for n in range(workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid:
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
