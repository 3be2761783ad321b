"""The operator API on the catalogue and users: items, labels, availability and a user's
history (a part of AdminService, server/admin.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from server.admin_base import MAX_LIMIT, AdminBase, check_limit, check_size
from server.pipeline.validate import MAX_ID_LEN, MAX_LABEL_LEN, check_epoch_ms, check_id
from shared.model.properties import PropertyError, checked
from shared.storage import event_store, item_store
from shared.storage.tables import (
    Item,
    as_utc,
)
from shared.wire.errors import InvalidArgument


@dataclass(frozen=True)
class HistoryEventView:
    item_id: str
    title: str
    kind: str
    event_time: datetime


@dataclass(frozen=True)
class ItemView:
    item_id: str
    title: str
    labels: list[str]
    available: bool
    in_catalogue: bool
    created_at_ms: int = 0
    in_model: bool = True
    properties: dict[str, Any] = field(default_factory=dict)
    properties_version: int = 0


class CatalogueAdmin(AdminBase):
    async def user_history(self, user_id: str, limit: int) -> list[HistoryEventView]:
        check_id("user_id", user_id)
        limit = check_limit("limit", limit, 50)
        events = await self._db(
            lambda s: event_store.recent_events(s, user_id=user_id, limit=limit)
        )
        titles = await self.catalogue.titles([item for item, _, _ in events])
        return [HistoryEventView(item, titles[item], kind, when) for item, kind, when in events]

    async def list_items(
        self, query: str, limit: int, unavailable_only: bool, item_ids: Sequence[str] = ()
    ) -> list[ItemView]:
        if len(query) > MAX_ID_LEN:
            raise InvalidArgument(
                "query", f"is {len(query)} characters long; at most {MAX_ID_LEN} are accepted"
            )
        limit = check_limit("limit", limit, 50)
        if len(item_ids) > MAX_LIMIT:
            raise InvalidArgument(
                "item_ids", f"has {len(item_ids)} entries; at most {MAX_LIMIT} are accepted"
            )
        for i, item_id in enumerate(item_ids):
            check_id(f"item_ids[{i}]", item_id)
        rows = await self._db(
            lambda s: item_store.search_items(
                s, query=query, limit=limit, unavailable_only=unavailable_only, item_ids=item_ids
            )
        )
        model = self.registry.current
        known = model.rows if model is not None else {}
        found = [
            ItemView(
                r.item_id,
                r.title,
                list(r.labels or []),
                r.available,
                True,
                int(as_utc(r.created_at).timestamp() * 1000) if r.created_at else 0,
                r.item_id in known,
                dict(r.properties or {}),
                r.properties_version or 0,
            )
            for r in rows
        ]
        if model is None or unavailable_only or len(found) >= limit:
            return found
        # Items the served model knows that have no catalogue entry (a catalogue is
        # optional), searchable by id so that an operator can still hide them. A matching
        # id that is in the catalogue was found above (the result was not cut short).
        listed = {view.item_id for view in found}
        needle = query.lower()
        extra: list[ItemView] = []
        wanted = set(item_ids)
        for item_id in item_ids or model.bundle.vocab:
            if wanted and item_id not in model.rows:
                continue
            if len(found) + len(extra) >= limit:
                break
            if item_id not in listed and (not needle or needle in item_id.lower()):
                extra.append(ItemView(item_id, "", [], True, False))
        return sorted(found + extra, key=lambda view: view.item_id)

    async def upsert_items(self, items: Sequence[ItemView]) -> tuple[int, int]:
        """Creates or replaces catalogue entries, each field checked and named."""
        check_size("items", len(items), MAX_AVAILABILITY_ITEMS, "items")
        rows = []
        for i, item in enumerate(items):
            check_id(f"items[{i}].item_id", item.item_id)
            if len(item.title) > MAX_TITLE_LEN or not item.title.isprintable():
                raise InvalidArgument(
                    f"items[{i}].title",
                    f"accepted: up to {MAX_TITLE_LEN} printable characters (is "
                    f"{len(item.title)} long)",
                )
            if len(item.labels) > MAX_ITEM_LABELS:
                raise InvalidArgument(
                    f"items[{i}].labels",
                    f"has {len(item.labels)} labels; at most {MAX_ITEM_LABELS} are accepted",
                )
            for j, label in enumerate(item.labels):
                check_id(f"items[{i}].labels[{j}]", label, MAX_LABEL_LEN)
            check_epoch_ms(f"items[{i}].created_at_ms", item.created_at_ms, zero="keep or now")
            try:
                properties = checked(item.properties, f"items[{i}].properties")
            except PropertyError as exc:
                raise InvalidArgument(exc.field, exc.reason) from None
            created = (
                datetime.fromtimestamp(item.created_at_ms / 1000, UTC)
                if item.created_at_ms
                else None
            )
            rows.append(
                Item(
                    item_id=item.item_id,
                    title=item.title,
                    labels=list(item.labels),
                    available=item.available,
                    properties=properties,
                    created_at=created,
                )
            )
        counts = await self._db(lambda s: item_store.upsert_items(s, items=rows))
        await self.catalogue.refresh()  # this replica now, the others at their poll
        await self.registry.refresh()
        return counts

    async def set_item_availability(self, item_ids: Sequence[str], available: bool) -> int:
        check_size("item_ids", len(item_ids), MAX_AVAILABILITY_ITEMS, "item ids")
        for i, item_id in enumerate(item_ids):
            check_id(f"item_ids[{i}]", item_id)
        updated = await self._db(
            lambda s: item_store.set_item_availability(
                s, item_ids=list(item_ids), available=available
            )
        )
        await self.registry.refresh()  # this replica applies it now, the others at their poll
        return updated


MAX_AVAILABILITY_ITEMS = 10_000


MAX_TITLE_LEN = 1024


MAX_ITEM_LABELS = 32
