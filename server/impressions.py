"""Impression log: every served list, written in batches off the request path.

Recommend names each non-empty answer with a recommendation_id and hands the
impression (user, items in order, model version, experiment arm, the business rules'
effects, and the shadow's result when a shadow candidate also ranked the request) to
``record``, which only
appends to an in-memory queue. A background task writes the queue in one multi-row INSERT
on the database executor as soon as ``flush_rows`` lists wait (server.
impression_flush_rows), and at the latest ``flush_s`` after the last write (server.
impression_flush_ms). Under load the writes are short and frequent (each holds the
interpreter for its rows' work, and requests that arrive meanwhile wait); at low traffic
a write's fixed cost (a transaction, the deletions check) is paid twice a second,
not ten times. Impressions are measurement, not
acknowledged data: past ``max_queued`` waiting rows they are dropped and counted
(recserve_impressions_dropped_total), and serving never waits for them. When the
database refuses a batch, its rows are written one by one, so that one bad row is
logged and skipped and the rest are stored; only when the database is unreachable is
the batch dropped.

A recommendation id is 128 random bits (32 hex characters): a client cannot guess the
id of a list served to someone else, and so cannot claim its clicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from server import metrics
from shared.model.rules import Effect
from shared.storage import impression_store
from shared.storage.engine import session_scope
from shared.storage.tables import utcnow

log = logging.getLogger(__name__)

FLUSH_S = 0.5
"""The default of server.impression_flush_ms."""
FLUSH_ROWS = 100
"""The default of server.impression_flush_rows."""


class ImpressionLog:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        *,
        max_queued: int,
        flush_s: float = FLUSH_S,
        flush_rows: int = FLUSH_ROWS,
        origin: str = "",
    ) -> None:
        self._origin = origin
        self._engine = engine
        self._executor = executor
        self._max_queued = max_queued
        self._flush_s = flush_s
        self._flush_rows = flush_rows
        self._due = asyncio.Event()
        self._queue: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self.written = 0
        self.dropped = 0

    @staticmethod
    def new_id() -> str:
        """128 random bits, unguessable and unique without coordination."""
        return secrets.token_hex(16)

    def record(
        self,
        recommendation_id: str,
        user_id: str,
        items: list[str],
        model_version: int,
        arm: str,
        *,
        served_at: datetime | None = None,
        shadow: tuple[int, float, float] | None = None,
        rules: Sequence[Effect] | None = None,
    ) -> None:
        """Queues one impression; ``shadow``: (version, overlap, milliseconds);
        ``rules``: what the business rules did to the list (its audit)."""
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            metrics.IMPRESSIONS_DROPPED.inc()
            return
        row: dict[str, Any] = {
            "recommendation_id": recommendation_id,
            "user_id": user_id,
            "items": items,
            "model_version": model_version,
            "arm": arm,
            "served_at": served_at or utcnow(),
            "shadow_version": None,
            "shadow_overlap": None,
            "shadow_ms": None,
            "rules": rules or None,
        }
        if shadow is not None:
            row["shadow_version"], row["shadow_overlap"], row["shadow_ms"] = shadow
        self._queue.append(row)
        if len(self._queue) == self._flush_rows:
            self._due.set()

    def forget_user(self, user_id: str) -> None:
        """A deleted user: their lists waiting for the next write are never written."""
        self._queue = [row for row in self._queue if row["user_id"] != user_id]

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="impression-log")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._flush_s)
            self._due.clear()
            await self.flush()

    async def flush(self) -> None:
        """Writes what is queued; when it returns, every impression recorded before the
        call is written (a write already under way is waited for, not overtaken)."""
        async with self._writing:
            await self._write()

    async def _write(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        loop = asyncio.get_running_loop()
        try:
            stored = await loop.run_in_executor(self._executor, self._insert, batch)
        except Exception as exc:  # measurement only: serving goes on
            stored = 0
            log.warning("dropped %d impressions: the database is unreachable (%s)", len(batch), exc)
        self.written += stored
        if stored < len(batch):
            self.dropped += len(batch) - stored
            metrics.IMPRESSIONS_DROPPED.inc(len(batch) - stored)

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """Stores ``rows`` in one statement, or, when the database refuses it, one by one
        (each its own transaction), skipping and logging the rows it refuses. Returns the
        rows stored; raises when the database cannot be reached at all. The rules'
        effects become JSON in the store, here off the event loop."""
        try:
            with session_scope(self._engine) as session:
                impression_store.insert_impressions(session, rows=rows, origin=self._origin)
            return len(rows)
        except OperationalError:
            raise  # unreachable, or out of space: every row would fail the same way
        except DBAPIError as exc:
            log.warning(
                "an impression batch was refused (%s): storing its rows one by one", exc.orig
            )
        stored = 0
        for row in rows:
            try:
                with session_scope(self._engine) as session:
                    impression_store.insert_impressions(session, rows=[row], origin=self._origin)
                stored += 1
            except OperationalError:
                raise
            except DBAPIError as exc:
                log.warning(
                    "skipped impression %s: the database refused it (%s)",
                    row["recommendation_id"],
                    type(exc.orig).__name__,
                )
        return stored

    async def close(self) -> None:
        """Stops the background task and writes what is queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
