"""A small gRPC client for recserve, used by the CLI, the TUI and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from shared.proto.recserve.v1 import admin_pb2_grpc, recommender_pb2_grpc


@dataclass
class Client:
    """Synchronous stubs over one channel; ``metadata`` carries the admin token."""

    target: str
    token: str | None = None
    channel: grpc.Channel = field(init=False)
    recommender: recommender_pb2_grpc.RecommenderStub = field(init=False)
    admin: admin_pb2_grpc.ModelAdminStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.target)
        self.recommender = recommender_pb2_grpc.RecommenderStub(self.channel)
        self.admin = admin_pb2_grpc.ModelAdminStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def close(self) -> None:
        self.channel.close()


@dataclass
class AsyncClient:
    """grpc.aio stubs over one channel."""

    target: str
    token: str | None = None
    channel: grpc.aio.Channel = field(init=False)
    recommender: recommender_pb2_grpc.RecommenderStub = field(init=False)
    admin: admin_pb2_grpc.ModelAdminStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.target)
        self.recommender = recommender_pb2_grpc.RecommenderStub(self.channel)
        self.admin = admin_pb2_grpc.ModelAdminStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def close(self) -> None:
        await self.channel.close()


def wait_serving(
    target: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    require_model: bool = True,
) -> bool:
    """Polls the standard health service until the server reports SERVING (or, with
    ``require_model=False``, answers at all: NOT_SERVING means up without a model).
    False when ``timeout`` passes or ``alive()`` (the server process) turns False first."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and alive():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if not require_model or reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False
