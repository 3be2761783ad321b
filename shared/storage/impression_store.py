"""Impressions: what was served, to whom, under which recommendation id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from shared.storage import change_feed
from shared.storage.tables import (
    Impression,
    UserTombstone,
    as_utc,
)


def delete_impressions_before(session: Session, *, before: datetime, limit: int) -> int:
    """Deletes up to ``limit`` impressions served before ``before``; returns how many."""
    ids = select(Impression.id).where(col(Impression.served_at) < before).limit(limit)
    result = session.execute(delete(Impression).where(col(Impression.id).in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def count_impressions(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Impression)).one())


def insert_impressions(
    session: Session, *, rows: Sequence[dict[str, Any]], origin: str = ""
) -> None:
    """Stores impression rows (column -> value) in one statement. On PostgreSQL, with an
    ``origin``, the transaction also announces the users shown a list (topic "shown" on
    the change feed) when it commits, so that other replicas count those lists."""
    rows = _without_deleted_users(session, rows)
    if not rows:
        return
    session.execute(Impression.__table__.insert(), list(rows))  # type: ignore[attr-defined]
    if origin and session.get_bind().dialect.name == "postgresql":
        users = sorted({row["user_id"] for row in rows})
        for chunk in _chunks(users, change_feed.MAX_PAYLOAD):
            change_feed.announce(session, topic="shown", subject="\n".join(chunk), origin=origin)


def _without_deleted_users(
    session: Session, rows: Sequence[dict[str, Any]]
) -> Sequence[dict[str, Any]]:
    """The rows, less those served to a user deleted since (a list queued on a replica
    when another deleted its user is never stored)."""
    users = list({row["user_id"] for row in rows})
    deleted = {
        user: as_utc(when)
        for user, when in session.exec(
            select(UserTombstone.user_id, UserTombstone.deleted_at).where(
                col(UserTombstone.user_id).in_(users)
            )
        ).all()
    }
    if not deleted:
        return rows
    return [
        row
        for row in rows
        if row["user_id"] not in deleted or as_utc(row["served_at"]) >= deleted[row["user_id"]]
    ]


def _chunks(values: list[str], limit: int) -> list[list[str]]:
    """``values`` in runs whose newline-joined length stays under ``limit`` bytes."""
    chunks: list[list[str]] = [[]]
    size = 0
    for value in values:
        width = len(value.encode()) + 1
        if chunks[-1] and size + width > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(value)
        size += width
    return [chunk for chunk in chunks if chunk]


def shown_to(
    session: Session, *, user_id: str, since: datetime, limit: int
) -> list[tuple[str, datetime, list[str]]]:
    """(recommendation id, served at, items) of the newest ``limit`` lists served to the
    user since ``since``, oldest first."""
    query = (
        select(Impression.recommendation_id, Impression.served_at, Impression.items)
        .where(col(Impression.user_id) == user_id, col(Impression.served_at) >= since)
        .order_by(col(Impression.served_at).desc())
        .limit(limit)
    )
    rows = session.exec(query).all()
    return [(r[0], r[1], list(r[2] or ())) for r in reversed(rows)]


def latest_impression(connection: Any) -> int:
    """The newest impression's row id (0 for none): where a poller starts."""
    return int(connection.execute(select(func.coalesce(func.max(Impression.id), 0))).scalar_one())


def users_shown_after(connection: Any, *, after: int, limit: int) -> list[tuple[int, str]]:
    """(row id, user) of the impressions stored after row ``after``, in row order."""
    query = (
        select(Impression.id, Impression.user_id)
        .where(col(Impression.id) > after)
        .order_by(col(Impression.id))
        .limit(limit)
    )
    return [(int(r[0]), r[1]) for r in connection.execute(query).all()]


def impressions_since(session: Session, *, since: datetime) -> list[Impression]:
    """Every impression served since ``since``."""
    return list(session.exec(select(Impression).where(col(Impression.served_at) >= since)).all())
