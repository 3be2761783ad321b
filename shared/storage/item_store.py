"""The catalogue: items, their labels, titles and availability."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from shared.model.properties import Properties, labels_of
from shared.storage.engine import IN_CHUNK
from shared.storage.tables import (
    Item,
    utcnow,
)


def unavailable_items(session: Session) -> set[str]:
    return set(session.exec(select(Item.item_id).where(col(Item.available).is_(False))).all())


def get_items(session: Session, *, item_ids: Sequence[str]) -> list[Item]:
    """The catalogue entries of ``item_ids`` that exist, in the order asked."""
    found: dict[str, Item] = {}
    for start in range(0, len(item_ids), IN_CHUNK):
        chunk = list(item_ids[start : start + IN_CHUNK])
        found.update(
            (row.item_id, row)
            for row in session.exec(select(Item).where(col(Item.item_id).in_(chunk)))
        )
    return [found[i] for i in item_ids if i in found]


def item_titles(session: Session, *, item_ids: Sequence[str]) -> dict[str, str]:
    titles: dict[str, str] = {}
    unique = list(dict.fromkeys(item_ids))
    for start in range(0, len(unique), IN_CHUNK):
        chunk = unique[start : start + IN_CHUNK]
        rows = session.exec(select(Item.item_id, Item.title).where(col(Item.item_id).in_(chunk)))
        titles.update({item_id: title for item_id, title in rows.all()})
    return titles


def item_properties(session: Session) -> dict[str, Properties]:
    """Every catalogue item that has properties, with them (what training learns from)."""
    rows = session.exec(
        select(Item.item_id, Item.properties).where(col(Item.properties_version) > 0)
    )
    return {item_id: dict(properties) for item_id, properties in rows.all() if properties}


def labelled_items(session: Session) -> dict[str, frozenset[str]]:
    """Every catalogue item that has labels, with them."""
    rows = session.exec(select(Item.item_id, Item.labels))
    return {item_id: frozenset(labels) for item_id, labels in rows.all() if labels}


def search_items(
    session: Session,
    *,
    query: str,
    limit: int,
    unavailable_only: bool = False,
    item_ids: Sequence[str] = (),
) -> list[Item]:
    """Catalogue items whose id or title contains ``query`` (case-insensitive), by id;
    only those in ``item_ids`` when it is given."""
    statement = select(Item)
    if item_ids:
        statement = statement.where(col(Item.item_id).in_(list(item_ids)[:IN_CHUNK]))
    if query:
        pattern = f"%{query.lower()}%"
        statement = statement.where(
            func.lower(Item.item_id).like(pattern) | func.lower(Item.title).like(pattern)
        )
    if unavailable_only:
        statement = statement.where(col(Item.available).is_(False))
    return list(session.exec(statement.order_by(col(Item.item_id)).limit(limit)).all())


def set_item_availability(session: Session, *, item_ids: Sequence[str], available: bool) -> int:
    """Marks the items (un)available, creating catalogue entries for unknown ids; returns
    how many items now have that availability."""
    unique = list(dict.fromkeys(item_ids))
    existing: set[str] = set()
    for start in range(0, len(unique), IN_CHUNK):
        chunk = unique[start : start + IN_CHUNK]
        session.execute(
            update(Item)
            .where(col(Item.item_id).in_(chunk))
            .values(available=available, updated_at=utcnow())
        )
        existing.update(session.exec(select(Item.item_id).where(col(Item.item_id).in_(chunk))))
    for item_id in unique:
        if item_id not in existing:
            session.add(Item(item_id=item_id, available=available))
    session.flush()
    return len(unique)


def upsert_items(session: Session, *, items: Iterable[Item]) -> tuple[int, int]:
    """Creates or replaces catalogue entries; an item with no created_at keeps its own
    (or gets now). The stored labels are the item's own and those its categorical
    properties stand for (``key:value``); a change of properties bumps their version.
    Properties must have been checked (shared/model/properties.py). Returns (created,
    updated)."""
    by_id = {item.item_id: item for item in items}  # the last of repeated ids wins
    existing: dict[str, Item] = {}
    ids = list(by_id)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        existing.update(
            (row.item_id, row)
            for row in session.exec(select(Item).where(col(Item.item_id).in_(chunk)))
        )
    now = utcnow()
    for item_id, item in by_id.items():
        row = existing.get(item_id)
        properties = dict(item.properties or {})
        labels = list(dict.fromkeys([*item.labels, *labels_of(properties)]))
        if row is None:
            session.add(
                Item(
                    item_id=item_id,
                    title=item.title,
                    labels=labels,
                    available=item.available,
                    properties=properties,
                    properties_version=1 if properties else 0,
                    created_at=item.created_at or now,
                    updated_at=now,
                )
            )
        else:
            if (row.properties or {}) != properties:
                row.properties_version = (row.properties_version or 0) + 1
            row.title, row.labels, row.available = item.title, labels, item.available
            row.properties = properties
            row.created_at = item.created_at or row.created_at
            row.updated_at = now
            session.add(row)
    session.flush()
    return len(by_id) - len(existing), len(existing)


def catalogue_stamp(session: Session) -> tuple[int, datetime | None]:
    """Changes whenever the catalogue does: (entries, newest change)."""
    count, newest = session.execute(
        select(func.count(), func.max(Item.updated_at)).select_from(Item)
    ).one()
    return int(count), newest


def catalogue_entries(session: Session) -> list[tuple[str, list[str], bool, datetime | None]]:
    """Every entry: (item_id, labels, available, created_at)."""
    rows = session.exec(select(Item.item_id, Item.labels, Item.available, Item.created_at))
    return [(i, list(labels or []), bool(a), c) for i, labels, a, c in rows.all()]
