"""Serving replicas as they report themselves."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from shared.storage.tables import (
    Replica,
    utcnow,
)


def report_replica(session: Session, *, replica: Replica) -> None:
    """Inserts or refreshes a server's row (its last_seen becomes now)."""
    replica.last_seen = utcnow()
    session.merge(replica)


def list_replicas(session: Session) -> list[Replica]:
    return list(session.exec(select(Replica).order_by(col(Replica.replica_id))).all())


def forget_replicas(session: Session, *, unseen_for_s: float) -> int:
    """Removes rows of servers that have not reported for ``unseen_for_s``."""
    horizon = utcnow() - timedelta(seconds=unseen_for_s)
    result = session.execute(delete(Replica).where(col(Replica.last_seen) < horizon))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def remove_replica(session: Session, *, replica_id: str) -> None:
    session.execute(delete(Replica).where(col(Replica.replica_id) == replica_id))
