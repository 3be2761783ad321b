"""A small gRPC client for recserve, used by the CLI, the TUI and the benchmarks."""

from __future__ import annotations

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
