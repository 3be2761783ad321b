"""Impressions: what was served, to whom, under which recommendation id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from shared.storage.tables import (
    Impression,
)


def delete_impressions_before(session: Session, *, before: datetime, limit: int) -> int:
    """Deletes up to ``limit`` impressions served before ``before``; returns how many."""
    ids = select(Impression.id).where(col(Impression.served_at) < before).limit(limit)
    result = session.execute(delete(Impression).where(col(Impression.id).in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def count_impressions(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Impression)).one())


def insert_impressions(session: Session, *, rows: Sequence[dict[str, Any]]) -> None:
    """Stores impression rows (column -> value) in one statement."""
    session.execute(Impression.__table__.insert(), list(rows))  # type: ignore[attr-defined]


def impressions_since(session: Session, *, since: datetime) -> list[Impression]:
    """Every impression served since ``since``."""
    return list(session.exec(select(Impression).where(col(Impression.served_at) >= since)).all())
