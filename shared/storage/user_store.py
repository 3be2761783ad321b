"""Users: flagged at import or ingestion (bots, outliers); deleted (tombstones) and
exported on request, with the audit of both."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from shared.storage import change_feed
from shared.storage.tables import (
    AuditEntry,
    FeedbackEvent,
    FlaggedUser,
    Impression,
    UserTombstone,
    utcnow,
)


def flag_users(session: Session, *, flags: dict[str, tuple[str, str]]) -> int:
    """Flags users ({user: (reason, detail)}); a user flagged before keeps its first
    flag. Returns how many were new."""
    known = (
        set(
            session.exec(
                select(FlaggedUser.user_id).where(col(FlaggedUser.user_id).in_(list(flags)))
            ).all()
        )
        if flags
        else set()
    )
    fresh = [
        FlaggedUser(user_id=user, reason=reason, detail=detail)
        for user, (reason, detail) in flags.items()
        if user not in known
    ]
    session.add_all(fresh)
    return len(fresh)


def flagged_user_ids(session: Session) -> set[str]:
    return set(session.exec(select(FlaggedUser.user_id)).all())


# --- deletion and export -------------------------------------------------------------------

USER_DELETED = "user_deleted"
"""The change topic every replica follows to drop a deleted user's caches."""


def delete_user(session: Session, *, user_id: str, by: str, origin: str = "") -> dict[str, int]:
    """Deletes everything stored about the user (events, impressions, flags) and leaves a
    tombstone at the server's time now; returns the rows deleted per table. Announced as
    a change, so that every replica drops the user's caches."""
    counts = {
        "events": _delete(session, FeedbackEvent, user_id),
        "impressions": _delete(session, Impression, user_id),
        "flags": _delete(session, FlaggedUser, user_id),
    }
    tombstone = session.get(UserTombstone, user_id)
    if tombstone is None:
        tombstone = UserTombstone(user_id=user_id)
    tombstone.deleted_at = utcnow()
    tombstone.deleted_by = by
    session.add(tombstone)
    change_feed.record(session, topic=USER_DELETED, subject=user_id, origin=origin)
    return counts


def _delete(session: Session, table: Any, user_id: str) -> int:
    result = session.execute(delete(table).where(col(table.user_id) == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def tombstone(session: Session, *, user_id: str) -> UserTombstone | None:
    return session.get(UserTombstone, user_id)


def export_page(
    session: Session, *, user_id: str, after_event: int, after_impression: int, limit: int
) -> tuple[list[FeedbackEvent], list[Impression]]:
    """The user's events and impressions after the given row ids, oldest first, at most
    ``limit`` of each (one page of ExportUser)."""
    events = session.exec(
        select(FeedbackEvent)
        .where(col(FeedbackEvent.user_id) == user_id, col(FeedbackEvent.id) > after_event)
        .order_by(col(FeedbackEvent.id))
        .limit(limit)
    ).all()
    impressions = session.exec(
        select(Impression)
        .where(col(Impression.user_id) == user_id, col(Impression.id) > after_impression)
        .order_by(col(Impression.id))
        .limit(limit)
    ).all()
    return list(events), list(impressions)


def flags_of(session: Session, *, user_id: str) -> list[FlaggedUser]:
    return list(session.exec(select(FlaggedUser).where(col(FlaggedUser.user_id) == user_id)))


def record_audit(
    session: Session, *, action: str, subject: str, by: str, detail: dict[str, Any]
) -> None:
    session.add(AuditEntry(action=action, subject=subject, by=by, detail=detail))


def audit_entries(session: Session, *, limit: int) -> list[AuditEntry]:
    """The newest audit entries first."""
    return list(
        session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)).all()
    )


def deleted_since(session: Session, *, since: Any) -> int:
    """Users deleted at or after ``since`` (a training job's start)."""
    from sqlalchemy import func

    query = select(func.count()).select_from(UserTombstone)
    return int(session.exec(query.where(col(UserTombstone.deleted_at) >= since)).one())
