"""The change feed: PostgreSQL LISTEN/NOTIFY, through which every replica learns which
users' histories changed, and of every other change it must apply (a rule set put or
deleted). server/invalidation.py follows it; on SQLite, replicas poll
event_store.users_after and the change table (``changes_after``) instead."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from shared.storage.tables import Change

MAX_PAYLOAD = 7000
"""Bytes of subject per notification (PostgreSQL refuses payloads of 8000 bytes)."""
CHANGES = "recserve_changes"
"""The channel of changes other than new events; a payload is ``origin\ntopic\nsubject``."""


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


def record(session: Session, *, topic: str, subject: str = "", origin: str = "") -> None:
    """Records a change in the session's transaction, and on PostgreSQL announces it on
    CHANGES when (and only if) that transaction commits."""
    session.add(Change(topic=topic, subject=subject[:256], origin=origin))
    if session.get_bind().dialect.name == "postgresql":
        announce(session, topic=topic, subject=subject, origin=origin)


def announce(session: Session, *, topic: str, subject: str, origin: str) -> None:
    """A NOTIFY on CHANGES in the session's transaction (PostgreSQL), without a row: for
    changes that pollers find in their own table (impressions)."""
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANGES, "payload": f"{origin}\n{topic}\n{subject}"},
    )


def latest_change(session: Any) -> int:
    """The newest change's id (0 for none): where a poller starts."""
    return int(session.execute(select(func.coalesce(func.max(Change.id), 0))).scalar_one())


def changes_after(session: Any, *, after: int, limit: int) -> list[tuple[int, str, str, str]]:
    """(id, topic, subject, origin) of the changes after id ``after``, oldest first."""
    query = (
        select(Change.id, Change.topic, Change.subject, Change.origin)
        .where(col(Change.id) > after)
        .order_by(col(Change.id))
        .limit(limit)
    )
    return [(int(r[0]), r[1], r[2], r[3]) for r in session.execute(query).all()]


def delete_changes_before(session: Session, *, before: Any) -> int:
    """Drops changes older than ``before`` (every replica has applied them long since)."""
    from sqlalchemy import delete

    result = session.execute(delete(Change).where(col(Change.created_at) < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
