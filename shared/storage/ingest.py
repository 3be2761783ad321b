"""Writing feedback events fast: the group-commit writer's and the importer's path.

An ``EventStore`` holds one DBAPI connection (for the one thread that uses it) and
stores a batch of events in one transaction, idempotently on event ids, returning the ids
it stored. Acknowledged means durable: it commits with the database's durable settings
(PostgreSQL's synchronous_commit stays on; SQLite runs with synchronous=FULL).

- **PostgreSQL**: the batch is COPYed into a temporary table, then one
  ``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING RETURNING`` moves the new
  ones over in arrival order (the first of repeated ids wins). When a channel is given,
  ``pg_notify`` in the same transaction tells every other replica which users' histories
  changed, at the moment the events become visible (server/invalidation.py listens).
- **SQLite**: one prepared ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per event on
  the held connection (no per-commit SQLAlchemy bookkeeping).
- **Anything else**: event_store.insert_events through a Core transaction.

Rows are plain ``EventRow`` tuples: at tens of thousands of events a second, building a
pydantic model per event would cost more than storing it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine

from shared.storage import change_feed, event_store

log = logging.getLogger(__name__)

NOTIFY_PAYLOAD_BYTES = 7900
"""PostgreSQL's limit is 8000 bytes per notification payload."""


class EventRow(NamedTuple):
    event_id: str
    user_id: str
    item_id: str
    kind: str
    value: float
    event_time: datetime
    recommendation_id: str | None = None


def first_per_event_id(events: Iterable[EventRow]) -> list[EventRow]:
    """The events, the first of each repeated event id kept, in order."""
    fresh: dict[str, EventRow] = {}
    for event in events:
        fresh.setdefault(event.event_id, event)
    return list(fresh.values())


def notify_payloads(origin: str, users: Iterable[str]) -> list[str]:
    """``origin`` then user ids, one per line, cut into payloads PostgreSQL accepts."""
    payloads: list[str] = []
    current: list[str] = [origin]
    size = len(origin.encode())
    for user in sorted(set(users)):
        length = len(user.encode()) + 1
        if size + length > NOTIFY_PAYLOAD_BYTES and len(current) > 1:
            payloads.append("\n".join(current))
            current, size = [origin], len(origin.encode())
        current.append(user)
        size += length
    if len(current) > 1:
        payloads.append("\n".join(current))
    return payloads


class EventStore:
    """Stores event batches on one held connection; not thread-safe (one writer thread)."""

    def __init__(self, engine: Engine, *, notify_channel: str | None = None, origin: str = ""):
        self._engine = engine
        self._dialect = engine.dialect.name
        self._channel = notify_channel if self._dialect == "postgresql" else None
        self._origin = origin
        self._raw: Any = None
        self._temp_ready = False
        self.refused: list[tuple[str, str]] = []
        """(event_id, user_id) of the last batch's events refused because their user was
        deleted after the event's time (DeleteUser's tombstone)."""

    def store(self, events: Sequence[EventRow]) -> list[tuple[str, str]]:
        """Stores the events whose ids are new, in one committed transaction; returns
        (event_id, user_id) of those stored (``refused`` holds those of deleted users).
        Raises on failure (nothing is stored)."""
        self.refused = []
        if not events:
            return []
        if self._dialect not in ("sqlite", "postgresql"):
            with self._engine.begin() as connection:
                new = event_store.insert_events(connection, events=events)
            return [
                (e.event_id, e.user_id) for e in first_per_event_id(events) if e.event_id in new
            ]
        if self._raw is None:
            self._raw = self._engine.raw_connection()
            self._temp_ready = False
        try:
            stored = (
                self._store_sqlite(events)
                if self._dialect == "sqlite"
                else self._store_postgres(events)
            )
            self._raw.commit()
            return stored
        except BaseException:
            self._drop_connection()
            raise

    def _store_sqlite(self, events: Sequence[EventRow]) -> list[tuple[str, str]]:
        stored, self.refused = event_store.insert_rows_sqlite(self._raw, first_per_event_id(events))
        return stored

    def _store_postgres(self, events: Sequence[EventRow]) -> list[tuple[str, str]]:
        connection = self._raw.driver_connection  # psycopg.Connection
        with connection.cursor() as cursor:
            if not self._temp_ready:
                event_store.create_incoming_table(cursor)
                self._temp_ready = True
            stored, self.refused = event_store.insert_rows_postgres(cursor, events)
            if self._channel and stored:
                payloads = notify_payloads(self._origin, (u for _, u in stored))
                change_feed.notify(cursor, self._channel, payloads)
        return stored

    def _drop_connection(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            raw.rollback()
        except Exception:  # the connection is already broken
            log.debug("rollback on a broken connection failed", exc_info=True)
        finally:
            try:
                raw.close()
            except Exception:
                log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        """Returns the held connection to the pool."""
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()
