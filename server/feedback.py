"""Group-commit writer for Feedback.

Concurrent Feedback calls are written in one transaction per batch (up to
``max_events``), on one writer thread, through shared.storage.ingest.EventStore (COPY on
PostgreSQL). Each call is answered only after the commit that holds its events, so an
acknowledged event is never lost; a failed commit fails every call in it with
StorageError, never silently. On PostgreSQL the same transaction notifies the other
replicas of the users whose histories changed.

``group_commit=False`` is the benchmark baseline: every event is inserted and committed
on its own, as a plain ORM-style service would.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine

from shared.storage import event_store
from shared.storage.ingest import EventRow, EventStore
from shared.wire.errors import Overloaded, StorageError

log = logging.getLogger(__name__)

Written = tuple[set[str], set[str]]
"""(event ids stored, event ids refused because their user was deleted after them)."""


class FeedbackWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        max_events: int,
        group_commit: bool = True,
        max_queued: int = 100_000,
        notify_channel: str | None = None,
        origin: str = "",
    ) -> None:
        self._engine = engine
        self._max_events = max_events
        self._group_commit = group_commit
        self._max_queued = max_queued
        self._queued = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="feedback-writer")
        self._pending: deque[tuple[list[EventRow], asyncio.Future[Written]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Used only on the writer thread.
        self._store = EventStore(engine, notify_channel=notify_channel, origin=origin)

    @property
    def queued_events(self) -> int:
        """Events waiting for a commit (a gauge of the writer's queue)."""
        return self._queued

    async def write(self, events: list[EventRow]) -> Written:
        """Stores ``events``; returns the event ids that were new, and those refused
        because their user was deleted after the event (the rest were duplicates). Raises
        StorageError when the database does not store them, and Overloaded (at once)
        when max_queued events already wait for a commit."""
        if self._queued and self._queued + len(events) > self._max_queued:
            raise Overloaded(
                f"{self._queued} feedback events are waiting for a commit; the server is at "
                "its limit (server.max_queued_events): retry with backoff"
            )
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._queued += len(events)
        self._pending.append((events, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="feedback-writer")
        # Shielded: a caller that goes away must not cancel a commit others wait for.
        return await asyncio.shield(future)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Waits (bounded) for queued events to commit, then stops the writer."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._pending and self._task is not None and not self._task.done():
            if asyncio.get_running_loop().time() > deadline:
                log.error("feedback writer closed with %d calls unanswered", len(self._pending))
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self._executor.submit(self._store.close)
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [self._pending.popleft()]
                size = len(batch[0][0])
                while self._pending and size + len(self._pending[0][0]) <= self._max_events:
                    batch.append(self._pending.popleft())
                    size += len(batch[-1][0])
                events = [event for request, _ in batch for event in request]
                try:
                    stored, refused = await loop.run_in_executor(
                        self._executor, self._commit, events
                    )
                except Exception:
                    log.exception("feedback commit of %d events failed", len(events))
                    # One call's bad data must not fail the others: each call again, alone.
                    for request, future in batch if len(batch) > 1 else []:
                        try:
                            alone = await loop.run_in_executor(
                                self._executor, self._commit, request
                            )
                        except Exception:
                            log.exception("feedback commit of one call failed")
                            self._fail(future)
                        else:
                            if not future.done():
                                future.set_result(alone)
                    if len(batch) == 1:
                        self._fail(batch[0][1])
                    continue
                finally:
                    self._queued -= len(events)
                claimed: set[str] = set()
                for request, future in batch:
                    mine = {e.event_id for e in request if e.event_id in stored} - claimed
                    claimed |= mine
                    theirs = {e.event_id for e in request if e.event_id in refused}
                    if not future.done():
                        future.set_result((mine, theirs))

    @staticmethod
    def _fail(future: asyncio.Future[Written]) -> None:
        """The caller learns that nothing of its call was stored; never why in detail
        (the database's message can hold SQL and other callers' values: it is logged)."""
        if not future.done():
            future.set_exception(
                StorageError(
                    "the events were not stored: the database is unavailable or refused "
                    "them; retry the call (event ids make retries safe)"
                )
            )

    def _commit(self, events: list[EventRow]) -> Written:
        """Runs on the writer thread."""
        if self._group_commit:
            stored = {event_id for event_id, _ in self._store.store(events)}
            return stored, {event_id for event_id, _ in self._store.refused}
        stored = set()
        for event in events:  # the baseline: a transaction per event
            with self._engine.begin() as connection:
                stored |= event_store.insert_events(connection, events=[event])
        return stored, set()
