"""The change feed: PostgreSQL LISTEN/NOTIFY, through which every replica learns which
users' histories changed (server/invalidation.py follows it; on SQLite, replicas poll
event_store.users_after instead)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def notify(cursor: Any, channel: str, payloads: Iterable[str]) -> None:
    """Sends each payload on ``channel`` inside the cursor's transaction: listeners see
    it when, and only if, that transaction commits."""
    for payload in payloads:
        cursor.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def listen(connection: Any, channel: str) -> None:
    """Subscribes a psycopg connection (autocommit) to ``channel``. The channel is a
    constant of the code, never input: LISTEN takes no bind parameters."""
    if not channel.isidentifier():
        raise ValueError(f"channel must be an identifier, got {channel!r}")
    connection.execute(f"LISTEN {channel}")
