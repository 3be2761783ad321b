"""The console's link to one recserve server: gRPC stubs, the token, and what the
operator is told when calls fail.

The grpc.aio channel is created on first use, inside the event loop that Textual's
``run()`` starts: a channel made earlier (in ``__init__``) belongs to no loop, or to
another one, and the first call then fails with "attached to a different loop".

Failures become notifications, never crashes: losing the server is reported once (and
its return once), other errors once per method until that method succeeds again. While
the server is unreachable or sheds load (UNAVAILABLE, DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED), calls back off: the refreshes skip the server until the next try,
which comes after a wait that doubles from 0.5 s to 10 s, and the operator is told when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from shared.client import AsyncClient, bearer
from shared.client.retry import Backoff
from shared.config import ClientSettings

Notify = Callable[[str, str, str], None]
"""(message, title, severity)"""
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
CHANNEL_OPTIONS: list[tuple[str, object]] = [
    # Reconnect within about two seconds once the server is back (gRPC's default backoff
    # grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class Connection:
    def __init__(
        self,
        target: str,
        token: str | None,
        notify: Notify,
        tls: ClientSettings | None = None,
    ) -> None:
        self.target = target
        self.token = token
        self.tls = tls
        self._notify = notify
        self._client: AsyncClient | None = None
        self.online: bool | None = None
        """None until the first call answers or fails."""
        self._failing: dict[str, str] = {}
        self.on_state: Callable[[bool], None] | None = None
        self._backoff = Backoff(0.5, 10.0)
        self.retry_at = 0.0
        """time.monotonic() before which calls are not sent (backing off)."""
        self.clock: Callable[[], float] = time.monotonic

    def _open(self) -> AsyncClient:
        if self._client is None:  # inside the running loop: see the module docstring
            self._client = AsyncClient(self.target, self.token, self.tls, CHANNEL_OPTIONS)
        return self._client

    async def admin(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        """ModelAdmin.<method>; None (after telling the operator) when it fails."""
        return await self._call(self._open().admin, method, request, timeout)

    async def recommender(self, method: str, request: Any, *, timeout: float = 5.0) -> Any | None:
        """Recommender.<method>; None (after telling the operator) when it fails."""
        return await self._call(self._open().recommender, method, request, timeout)

    async def _call(self, stub: Any, method: str, request: Any, timeout: float) -> Any | None:
        if self.clock() < self.retry_at:
            return None  # backing off: the next try is due at retry_at
        try:
            answer = await getattr(stub, method)(
                request, metadata=bearer(self.token), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._failed(method, exc)
            return None
        self._backoff.reset()
        self._set_online(True)
        self._failing.pop(method, None)
        return answer

    def _back_off(self) -> float:
        delay = self._backoff.delay()
        self.retry_at = self.clock() + delay
        return delay

    def _failed(self, method: str, exc: grpc.aio.AioRpcError) -> None:
        if exc.code() in UNREACHABLE:
            delay = self._back_off()
            if self.online is not False:
                self._notify(
                    f"{self.target} does not answer ({exc.code().name}); retrying in {delay:.1f}s",
                    "Server unreachable",
                    "error",
                )
            self._set_online(False)
            return
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            delay = self._back_off()
            self._notify(
                f"{exc.details()}; retrying in {delay:.1f}s", f"{method}: server busy", "warning"
            )
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
        if self._client is not None:
            await self._client.close()
            self._client = None
