"""The console's link to one recserve server: gRPC stubs, the token, and what the
operator is told when calls fail.

The grpc.aio channel is created on first use, inside the event loop that Textual's
``run()`` starts: a channel made earlier (in ``__init__``) belongs to no loop, or to
another one, and the first call then fails with "attached to a different loop".

Failures become notifications, never crashes: losing the server is reported once (and
its return once), other errors once per method until that method succeeds again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from shared.proto.recserve.v1 import admin_pb2_grpc, recommender_pb2_grpc

Notify = Callable[[str, str, str], None]
"""(message, title, severity)"""
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
CHANNEL_OPTIONS = [
    # Reconnect within about two seconds once the server is back (gRPC's default backoff
    # grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class Connection:
    def __init__(self, target: str, token: str | None, notify: Notify) -> None:
        self.target = target
        self.token = token
        self._notify = notify
        self._channel: grpc.aio.Channel | None = None
        self._admin: admin_pb2_grpc.ModelAdminStub | None = None
        self._recommender: recommender_pb2_grpc.RecommenderStub | None = None
        self.online: bool | None = None
        """None until the first call answers or fails."""
        self._failing: dict[str, str] = {}
        self.on_state: Callable[[bool], None] | None = None

    def _stubs(self) -> tuple[admin_pb2_grpc.ModelAdminStub, recommender_pb2_grpc.RecommenderStub]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            self._admin = admin_pb2_grpc.ModelAdminStub(self._channel)
            self._recommender = recommender_pb2_grpc.RecommenderStub(self._channel)
        assert self._admin is not None and self._recommender is not None
        return self._admin, self._recommender

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def admin(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        """ModelAdmin.<method>; None (after telling the operator) when it fails."""
        return await self._call(self._stubs()[0], method, request, timeout)

    async def recommender(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        """Recommender.<method>; None (after telling the operator) when it fails."""
        return await self._call(self._stubs()[1], method, request, timeout)

    async def _call(self, stub: Any, method: str, request: Any, timeout: float) -> Any | None:
        try:
            answer = await getattr(stub, method)(request, metadata=self.metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._failed(method, exc)
            return None
        self._set_online(True)
        self._failing.pop(method, None)
        return answer

    def _failed(self, method: str, exc: grpc.aio.AioRpcError) -> None:
        if exc.code() in UNREACHABLE:
            if self.online is not False:
                self._notify(
                    f"{self.target} does not answer ({exc.code().name}); retrying",
                    "Server unreachable",
                    "error",
                )
            self._set_online(False)
            return
        self._set_online(True)
        message = exc.details() or exc.code().name
        if self._failing.get(method) != message:
            self._failing[method] = message
            self._notify(message, f"{method} failed: {exc.code().name}", "error")

    def _set_online(self, online: bool) -> None:
        was, self.online = self.online, online
        if was is False and online:
            self._notify(f"{self.target} answers again", "Server reachable", "information")
        if was != online and self.on_state is not None:
            self.on_state(online)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
