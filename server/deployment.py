"""This server's place in the deployment: its replica row and the housekeeping it shares.

Every ``server.replica_report_s`` a server writes its row in the ``replica`` table (the
version it serves, its health, backend and device, and why it serves something other
than the active version, if it does) and reads everyone's rows back, so GetServerStats
shows every replica of the deployment, not only the one that answers. The database is
the one thing every replica and the console can reach, whatever the broker.

The same loop runs the reaper of jobs whose worker died (every ``worker.reap_every_s``),
so lost jobs are failed even where no worker or beat is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import Engine

from server.registry import ModelRegistry
from server.serving import ServingHealth
from shared.config import Settings
from shared.storage import replica_store
from shared.storage.engine import session_scope
from shared.storage.tables import Replica, as_utc, utcnow
from shared.training.jobs import reap_jobs

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ReplicaView:
    replica_id: str
    address: str
    serving_version: int
    health: str
    backend: str
    device: str
    note: str
    last_seen_ms: int
    uptime_s: float
    alive: bool


class Deployment:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        executor: Executor,
        registry: ModelRegistry,
        health: ServingHealth,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._executor = executor
        self._registry = registry
        self._health = health
        self.address = ""
        self.replica_id = ""
        """host:port:pid, once started on its port."""
        self.replicas: list[ReplicaView] = []
        self._started = utcnow()
        self._task: asyncio.Task[None] | None = None
        self._last_reap = 0.0

    async def start(self, port: int) -> None:
        """Reports this replica (listening on ``port``) now, then every interval and
        whenever the served model or the health changes."""
        host = self._settings.server.host
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        self.address = f"{shown}:{port}"
        self.replica_id = f"{socket.gethostname()}:{port}:{os.getpid()}"
        await self.report()
        self._task = asyncio.create_task(self._loop(), name="deployment")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self._run(self._remove)
        except Exception:
            log.warning("could not remove replica row %s", self.replica_id, exc_info=True)

    async def _loop(self) -> None:
        changed = self._health.changed
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stop() sends when the event fires at the same moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.server.replica_report_s):
                    await changed.wait()
            changed.clear()
            try:
                await self.report()
            except Exception:
                log.warning("replica report failed (database unreachable?)", exc_info=True)

    async def report(self) -> None:
        """Writes this replica's row, reads every row back, reaps lost jobs when due."""
        model = self._registry.current
        serving = model is not None and not self._health.draining
        row = Replica(
            replica_id=self.replica_id,
            address=self.address,
            serving_version=model.version if model else 0,
            health="SERVING" if serving else "NOT_SERVING",
            backend=model.backend.name if model else "",
            device=model.backend.device if model else "",
            note=self._registry.note[:512],
            started_at=self._started,
        )
        reap = time.monotonic() - self._last_reap >= self._settings.worker.reap_every_s
        if reap:
            self._last_reap = time.monotonic()
        self.replicas = await self._run(self._exchange, row, reap)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    def _exchange(self, row: Replica, reap: bool) -> list[ReplicaView]:
        stale_s = self._settings.server.replica_stale_s
        with session_scope(self._engine) as session:
            replica_store.report_replica(session, replica=row)
            replica_store.forget_replicas(session, unseen_for_s=10 * stale_s)
            rows = replica_store.list_replicas(session)
        if reap:
            reap_jobs(self._settings, self._engine)
        now = utcnow()
        return [
            ReplicaView(
                replica_id=r.replica_id,
                address=r.address,
                serving_version=r.serving_version,
                health=r.health,
                backend=r.backend,
                device=r.device,
                note=r.note,
                last_seen_ms=int(as_utc(r.last_seen).timestamp() * 1000),
                uptime_s=(as_utc(r.last_seen) - as_utc(r.started_at)).total_seconds(),
                alive=(now - as_utc(r.last_seen)).total_seconds() < stale_s,
            )
            for r in rows
        ]

    def _remove(self) -> None:
        with session_scope(self._engine) as session:
            replica_store.remove_replica(session, replica_id=self.replica_id)
