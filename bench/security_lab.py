"""The lab of `make security` (bench/security.py): the server under attack, its tokens,
and the helpers every attack row uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.processes import ServerProcess
from shared.config import ServerSettings, Settings

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
