"""The operator API on users' data: DeleteUser and ExportUser (a part of AdminService,
server/admin.py), both audited (who, when, how many rows).

DeleteUser removes, in one transaction, the user's events, impressions and flags, and
leaves a tombstone at the server's time now (shared/storage/user_store.py); then their
mentions in stored import reports; then, on this replica at once and on the others when
they hear of the change (server/invalidation.py), their cached history, state, showings,
queued impressions and any encoding in flight. ExportUser pages through everything
stored about the user, as JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from server.admin_base import AdminBase
from server.arms import arm_name
from server.pipeline.validate import check_id
from shared.storage import reports, user_store
from shared.storage.tables import AuditEntry, as_utc
from shared.telemetry import caller_name
from shared.wire.errors import InvalidArgument

DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
PAGE_TOKEN = re.compile(r"^e(\d{1,19})\.i(\d{1,19})$")


@dataclass(frozen=True)
class Deleted:
    counts: dict[str, int]
    deleted_at_ms: int


def _when(value: Any) -> str:
    return as_utc(value).isoformat() if value is not None else ""


class UsersAdmin(AdminBase):
    async def delete_user(self, user_id: str) -> Deleted:
        check_id("user_id", user_id)
        by = caller_name.get() or "anonymous"

        def delete(session: Session) -> tuple[dict[str, int], int]:
            counts = user_store.delete_user(session, user_id=user_id, by=by)
            stone = user_store.tombstone(session, user_id=user_id)
            assert stone is not None
            return counts, int(as_utc(stone.deleted_at).timestamp() * 1000)

        counts, deleted_ms = await self._db(delete)
        folder = self.settings.data_dir / "import-reports"
        counts["import_reports"] = await self._run(reports.scrub_user, folder, user_id)
        self.forget_user(user_id)
        await self._db(
            lambda s: user_store.record_audit(
                s, action="delete_user", subject=user_id, by=by, detail=counts
            )
        )
        return Deleted(counts, deleted_ms)

    async def export_user(self, user_id: str, page_token: str, page_size: int) -> tuple[str, str]:
        """One page of everything stored about the user, as JSON, and the next page's
        token ("" after the last)."""
        check_id("user_id", user_id)
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument(
                "page_size", f"is {page_size}; accepted: 1..{MAX_PAGE} (0 means {DEFAULT_PAGE})"
            )
        size = page_size or DEFAULT_PAGE
        after_event = after_impression = 0
        if page_token:
            found = PAGE_TOKEN.match(page_token)
            if found is None:
                raise InvalidArgument(
                    "page_token",
                    "is not a token this call returned; accepted: '' or next_page_token",
                )
            after_event, after_impression = int(found.group(1)), int(found.group(2))
        by = caller_name.get() or "anonymous"

        def read(session: Session) -> tuple[dict[str, Any], str]:
            page, token = _page(session, user_id, page_token, after_event, after_impression, size)
            user_store.record_audit(
                session, action="export_user", subject=user_id, by=by,
                detail={"events": len(page["events"]), "impressions": len(page["impressions"]),
                        "page_token": page_token},
            )  # fmt: skip
            return page, token

        page, token = await self._db(read)
        if not page_token:
            page["experiment_arm"] = self._arm(user_id)
        return json.dumps(page, sort_keys=True), token

    def _arm(self, user_id: str) -> str:
        """The arm the user is served by now ("" without a traffic split)."""
        if not self.registry.arms:
            return ""
        model, _ = self.registry.model_for(user_id)
        return arm_name(model.version) if model is not None else ""

    async def audit(self, limit: int) -> list[AuditEntry]:
        return await self._db(lambda s: user_store.audit_entries(s, limit=limit))


def _page(
    session: Session,
    user_id: str,
    page_token: str,
    after_event: int,
    after_impression: int,
    size: int,
) -> tuple[dict[str, Any], str]:
    """One page of the export and the next page's token."""
    events, impressions = user_store.export_page(
        session, user_id=user_id, after_event=after_event,
        after_impression=after_impression, limit=size,
    )  # fmt: skip
    page: dict[str, Any] = {
        "user_id": user_id,
        "events": [
            {"event_id": e.event_id, "item_id": e.item_id, "kind": e.kind, "value": e.value,
             "event_time": _when(e.event_time), "received_time": _when(e.received_time),
             "recommendation_id": e.recommendation_id or ""}
            for e in events
        ],
        "impressions": [
            {"recommendation_id": i.recommendation_id, "items": i.items,
             "model_version": i.model_version, "arm": i.arm,
             "served_at": _when(i.served_at), "rules": i.rules or []}
            for i in impressions
        ],
    }  # fmt: skip
    if not page_token:  # the first page: what is not paged
        page["flags"] = [
            {"reason": f.reason, "detail": f.detail, "flagged_at": _when(f.flagged_at)}
            for f in user_store.flags_of(session, user_id=user_id)
        ]
        stone = user_store.tombstone(session, user_id=user_id)
        page["deleted_at"] = _when(stone.deleted_at) if stone else ""
    full = len(events) == size or len(impressions) == size
    last_event = events[-1].id if events else after_event
    last_impression = impressions[-1].id if impressions else after_impression
    return page, (f"e{last_event}.i{last_impression}" if full else "")
