"""Users flagged at import or ingestion (bots, outliers)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from shared.storage.tables import (
    FlaggedUser,
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
