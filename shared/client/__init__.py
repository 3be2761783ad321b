"""A small gRPC client for recserve, used by the CLI, the TUI and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from shared.config import ClientSettings, Settings
from shared.proto.recserve.v1 import admin_pb2_grpc, recommender_pb2, recommender_pb2_grpc


def channel_credentials(tls: ClientSettings | None) -> grpc.ChannelCredentials | None:
    """TLS credentials (with a client certificate for mTLS) when ``tls`` names a CA or a
    certificate; None for a plaintext channel."""
    if tls is None or not (tls.tls_ca or tls.tls_cert):
        return None

    def read(path: Path | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.tls_ca),
        private_key=read(tls.tls_key),
        certificate_chain=read(tls.tls_cert),
    )


def channel_options(tls: ClientSettings | None) -> list[tuple[str, object]]:
    if tls is not None and tls.tls_server_name:
        return [("grpc.ssl_target_name_override", tls.tls_server_name)]
    return []


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


@dataclass
class Client:
    """Synchronous stubs over one channel; ``metadata`` carries the bearer token, and
    ``tls`` (ClientSettings) makes the channel TLS or mTLS."""

    target: str
    token: str | None = None
    tls: ClientSettings | None = None
    channel: grpc.Channel = field(init=False)
    recommender: recommender_pb2_grpc.RecommenderStub = field(init=False)
    admin: admin_pb2_grpc.ModelAdminStub = field(init=False)

    def __post_init__(self) -> None:
        credentials = channel_credentials(self.tls)
        options = channel_options(self.tls)
        self.channel = (
            grpc.secure_channel(self.target, credentials, options=options)
            if credentials
            else grpc.insecure_channel(self.target, options=options)
        )
        self.recommender = recommender_pb2_grpc.RecommenderStub(self.channel)
        self.admin = admin_pb2_grpc.ModelAdminStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    def similar_items(
        self, item_ids: Sequence[str], k: int = 10, *, timeout: float = 10.0, **fields: Any
    ) -> recommender_pb2.SimilarItemsResponse:
        """SimilarItems for ``item_ids`` (other request fields by name: user_id,
        include_labels, include_titles, ...)."""
        request = recommender_pb2.SimilarItemsRequest(item_ids=list(item_ids), k=k, **fields)
        response: recommender_pb2.SimilarItemsResponse = self.recommender.SimilarItems(
            request, metadata=self.metadata, timeout=timeout
        )
        return response

    def close(self) -> None:
        self.channel.close()


@dataclass
class AsyncClient:
    """grpc.aio stubs over one channel (create it inside the running event loop)."""

    target: str
    token: str | None = None
    tls: ClientSettings | None = None
    options: list[tuple[str, object]] = field(default_factory=list)
    channel: grpc.aio.Channel = field(init=False)
    recommender: recommender_pb2_grpc.RecommenderStub = field(init=False)
    admin: admin_pb2_grpc.ModelAdminStub = field(init=False)

    def __post_init__(self) -> None:
        credentials = channel_credentials(self.tls)
        options = [*channel_options(self.tls), *self.options]
        self.channel = (
            grpc.aio.secure_channel(self.target, credentials, options=options)
            if credentials
            else grpc.aio.insecure_channel(self.target, options=options)
        )
        self.recommender = recommender_pb2_grpc.RecommenderStub(self.channel)
        self.admin = admin_pb2_grpc.ModelAdminStub(self.channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    async def close(self) -> None:
        await self.channel.close()


def client_token(settings: Settings, explicit: str | None = None) -> str | None:
    """The token a recserve client sends: --token, else RECSERVE_CLIENT__TOKEN, else the
    server's own admin token (the embedded default, where both run on one machine; a
    ``name=secret`` setting sends its secret)."""
    if explicit:
        return explicit
    if settings.client.token is not None:
        return settings.client.token.get_secret_value()
    admin = [*settings.server.admin_tokens, settings.server.admin_token]
    for secret in admin:
        if secret is not None:
            _, named, value = secret.get_secret_value().partition("=")
            return value if named else secret.get_secret_value()
    return None


def wait_serving(
    target: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    require_model: bool = True,
    tls: ClientSettings | None = None,
) -> bool:
    """Polls the standard health service until the server reports SERVING (or, with
    ``require_model=False``, answers at all: NOT_SERVING means up without a model).
    False when ``timeout`` passes or ``alive()`` (the server process) turns False first."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with Client(target, tls=tls).channel as channel:
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
