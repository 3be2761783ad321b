"""Impressions: what was served, to whom, under which recommendation id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from shared.model.rules import Effect, audit_json
from shared.storage import change_feed
from shared.storage.event_store import sqlite_time_processor
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
    dialect = session.get_bind().dialect.name
    if dialect in _DRIVER_INSERT:
        # The driver's own executemany over ready tuples: SQLAlchemy's per-row parameter
        # processing (JSON and time conversion) cost twice the insert itself.
        session.connection().exec_driver_sql(
            _DRIVER_INSERT[dialect], [_driver_row(row, dialect) for row in rows]
        )
    else:
        plain = [{**row, "rules": _audit_objects(row.get("rules"))} for row in rows]
        session.execute(Impression.__table__.insert(), plain)  # type: ignore[attr-defined]
    if origin and dialect == "postgresql":
        users = sorted({row["user_id"] for row in rows})
        for chunk in _chunks(users, change_feed.MAX_PAYLOAD):
            change_feed.announce(session, topic="shown", subject="\n".join(chunk), origin=origin)


_COLUMNS = (
    "recommendation_id", "user_id", "items", "model_version", "arm", "served_at",
    "shadow_version", "shadow_overlap", "shadow_ms", "rules",
)  # fmt: skip
_JSON_COLUMNS = ("items", "rules")
_DRIVER_INSERT = {
    "sqlite": f"INSERT INTO impression ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS))})",
    "postgresql": f"INSERT INTO impression ({', '.join(_COLUMNS)}) VALUES ("
    + ", ".join("%s::json" if c in _JSON_COLUMNS else "%s" for c in _COLUMNS)
    + ")",
}
"""The impression insert in each driver's own parameter style."""


def _driver_row(row: dict[str, Any], dialect: str) -> tuple[Any, ...]:
    """An impression row (column -> value; ``rules`` a list of Effect or of JSON objects)
    as the driver's parameters, stored exactly as the ORM stores it."""
    rules = row.get("rules")
    if rules:
        rules = audit_json(rules) if isinstance(rules[0], Effect) else json.dumps(rules)
    served_at = row["served_at"]
    return (
        row["recommendation_id"],
        row["user_id"],
        json.dumps(row["items"]),
        row["model_version"],
        row["arm"],
        sqlite_time_processor()(served_at) if dialect == "sqlite" else served_at,
        row.get("shadow_version"),
        row.get("shadow_overlap"),
        row.get("shadow_ms"),
        rules or None,
    )


def _audit_objects(rules: Sequence[Any] | None) -> list[Any] | None:
    """A row's rule effects as JSON objects (Effect tuples turned into dicts)."""
    if not rules:
        return None
    return [e.to_json() if isinstance(e, Effect) else e for e in rules]


def _without_deleted_users(
    session: Session, rows: Sequence[dict[str, Any]]
) -> Sequence[dict[str, Any]]:
    """The rows, less those served to a user deleted since (a list queued on a replica
    when another deleted its user is never stored). Only deletions after the oldest row
    can drop one: an indexed range that is nearly always empty, where a lookup of every
    row's user cost as much as the insert."""
    oldest = min(row["served_at"] for row in rows)
    deleted = {
        user: as_utc(when)
        for user, when in session.exec(
            select(UserTombstone.user_id, UserTombstone.deleted_at).where(
                col(UserTombstone.deleted_at) > oldest
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
