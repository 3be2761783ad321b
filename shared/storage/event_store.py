"""Feedback events: idempotent inserts, histories, counts, training reads and retention."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from sqlalchemy import String, cast, delete, func, tuple_
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from shared.storage.engine import IN_CHUNK
from shared.storage.tables import (
    FeedbackEvent,
    utcnow,
)

_EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "value",
    "event_time",
    "recommendation_id",
)


SQLITE_INSERT_EVENT = (
    f"INSERT INTO feedback_event ({', '.join(_EVENT_COLUMNS)}, received_time) "
    f"VALUES ({', '.join('?' * (len(_EVENT_COLUMNS) + 1))}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


class EventLike(Protocol):
    """An event to store: FeedbackEventCreate, or shared.storage.ingest.EventRow (the fast path)."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def event_time(self) -> datetime: ...


def _first_per_event_id(events: Sequence[EventLike]) -> dict[str, EventLike]:
    """The events by id, the first of each repeated id kept, in order."""
    fresh: dict[str, EventLike] = {}
    for event in events:
        fresh.setdefault(event.event_id, event)
    return fresh


@cache
def sqlite_time_processor() -> Callable[[datetime], str]:
    """SQLAlchemy's own datetime -> text conversion on SQLite (every time column is the same),
    so that rows written on a raw connection are stored exactly as the ORM stores them."""
    from sqlalchemy.dialects.sqlite import pysqlite

    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    dialect = pysqlite.dialect()
    processor = table.c.event_time.type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        raise RuntimeError("SQLAlchemy has no datetime bind processor for SQLite")
    return processor  # type: ignore[no-any-return]


def insert_events(session: Session | Connection, *, events: Sequence[EventLike]) -> set[str]:
    """Stores the events whose event_id is new; returns those event ids.

    Duplicates (already stored, or repeated within ``events``) are skipped, so the
    call is idempotent. The caller commits. ``session`` may be a plain Core connection.
    """
    fresh = _first_per_event_id(events)
    if not fresh:
        return set()
    now = utcnow()
    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    bind = session if isinstance(session, Connection) else session.get_bind()
    dialect = bind.dialect.name
    rows = [
        {**{c: getattr(event, c) for c in _EVENT_COLUMNS}, "received_time": now}
        for event in fresh.values()
    ]
    if dialect in ("sqlite", "postgresql"):
        # One statement: ON CONFLICT DO NOTHING skips stored ids (also ones a concurrent
        # writer stored meanwhile) and RETURNING names exactly the rows inserted.
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
        stmt = insert.on_conflict_do_nothing(index_elements=["event_id"]).returning(
            table.c.event_id
        )
        stored: set[str] = set()
        for start in range(0, len(rows), 2000):
            result = session.execute(stmt, rows[start : start + 2000])
            stored.update(r[0] for r in result.all())
        return stored
    ids = list(fresh)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        existing = (
            session.execute(
                select(FeedbackEvent.event_id).where(col(FeedbackEvent.event_id).in_(chunk))
            )
            .scalars()
            .all()
        )
        for event_id in existing:
            fresh.pop(event_id, None)
    rows = [row for row in rows if row["event_id"] in fresh]
    if rows:
        session.execute(table.insert(), rows)
    return set(fresh)


def recent_history(session: Session, *, user_id: str, limit: int) -> list[tuple[str, datetime]]:
    """The user's newest ``limit`` events as (item_id, event_time), oldest first."""
    rows = session.exec(
        select(FeedbackEvent.item_id, FeedbackEvent.event_time)
        .where(FeedbackEvent.user_id == user_id)
        .order_by(col(FeedbackEvent.event_time).desc(), col(FeedbackEvent.id).desc())
        .limit(limit)
    ).all()
    return [(item, when) for item, when in reversed(rows)]


NAIVE_EPOCH = datetime(1970, 1, 1)


def recent_history_times(session: Session, *, user_id: str, limit: int) -> list[tuple[float, str]]:
    """The user's newest ``limit`` events as (event time in epoch seconds, item_id), oldest
    first (by time, then item): what the server's history cache keeps. The server's hot
    read, so it skips the ORM's row objects, and on SQLite reads the stored time text
    and parses it with ``datetime.fromisoformat`` (the generic date-time processing was
    half of a 512-event read)."""
    events, _, _ = recent_history_split(session, user_id=user_id, limit=limit, negative=None)
    return events


def recent_history_split(
    session: Session,
    *,
    user_id: str,
    limit: int,
    negative: Callable[[str, float], bool] | None,
) -> tuple[list[tuple[float, str]], set[str], int]:
    """As recent_history_times, with the events that ``negative(kind, value)`` calls
    negative left out of the history and returned apart, as the set of their items; and
    how many rows were read (positive and negative)."""
    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    sqlite_text = session.get_bind().dialect.name == "sqlite"
    when = cast(table.c.event_time, String) if sqlite_text else table.c.event_time
    columns = [table.c.item_id, when]
    if negative is not None:
        columns += [table.c.kind, table.c.value]
    statement = (
        select(*columns)
        .where(table.c.user_id == user_id)
        .order_by(table.c.event_time.desc(), table.c.id.desc())
        .limit(limit)
    )
    rows = session.connection().execute(statement).all()
    read = len(rows)
    negatives: set[str] = set()
    if negative is not None:
        positives = []
        for row in rows:
            if negative(row[2], row[3]):
                negatives.add(row[0])
            else:
                positives.append(row)
        rows = positives
    if sqlite_text:  # naive UTC text; minus the naive epoch is what .timestamp() computes
        parse, epoch = datetime.fromisoformat, NAIVE_EPOCH
        events = sorted(((parse(r[1]) - epoch).total_seconds(), r[0]) for r in rows)
        return events, negatives, read
    return sorted((r[1].timestamp(), r[0]) for r in rows), negatives, read


def count_user_events(session: Session, *, user_id: str) -> int:
    """How many events the user has stored (an index-only count: the server's check that a
    cached history is still whole)."""
    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    query = select(func.count()).select_from(table).where(table.c.user_id == user_id)
    return int(session.connection().execute(query).scalar_one())


def some_user_ids(session: Session, *, limit: int) -> list[str]:
    """Up to ``limit`` distinct users with stored events, in id order."""
    query = select(FeedbackEvent.user_id).distinct().order_by(FeedbackEvent.user_id).limit(limit)
    return [str(user) for user in session.exec(query)]


def delete_events_before(session: Session, *, before: datetime, limit: int) -> int:
    """Deletes up to ``limit`` events whose event time is before ``before`` (oldest rows
    first); returns how many."""
    ids = select(FeedbackEvent.id).where(col(FeedbackEvent.event_time) < before).limit(limit)
    result = session.execute(delete(FeedbackEvent).where(col(FeedbackEvent.id).in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def count_events(session: Session, *, id_prefix: str = "") -> int:
    """Stored events, or only those whose event_id starts with ``id_prefix``."""
    query = select(func.count()).select_from(FeedbackEvent)
    if id_prefix:
        query = query.where(col(FeedbackEvent.event_id).startswith(id_prefix))
    return int(session.exec(query).one())


def max_event_row(session: Session | Connection) -> int:
    """The highest feedback_event.id (the data watermark), 0 when empty."""
    return int(session.execute(select(func.max(FeedbackEvent.id))).scalar() or 0)


EventRow = tuple[str, str] | tuple[str, str, float]
"""(user_id, item_id), or (user_id, item_id, weight) where the weights were asked for."""


def user_event_pages(
    session: Session,
    *,
    watermark: int,
    batch_rows: int = 100_000,
    exclude_users: frozenset[str] | set[str] = frozenset(),
    negative: Callable[[str, float], bool] | None = None,
    weight: Callable[[str, float], float] | None = None,
) -> Iterator[list[EventRow]]:
    """(user_id, item_id) of every event with id <= watermark, ordered by user, then
    event time, then row id, in pages of ``batch_rows``; with ``weight``, (user_id,
    item_id, weight(kind, value)) instead (training's loss weighs each target by it).

    Keyset pagination on (user_id, event_time, id) walks ix_feedback_user_time, so each
    page is an index range scan and memory holds one page, however many events there are.
    Events of ``exclude_users``, and those ``negative(kind, value)`` calls negative, are
    dropped from the pages.
    """
    key = tuple_(col(FeedbackEvent.user_id), col(FeedbackEvent.event_time), col(FeedbackEvent.id))
    after: tuple[str, datetime, int] | None = None
    while True:
        query = sa_select(
            col(FeedbackEvent.user_id),
            col(FeedbackEvent.item_id),
            col(FeedbackEvent.event_time),
            col(FeedbackEvent.id),
            col(FeedbackEvent.kind),
            col(FeedbackEvent.value),
        ).where(col(FeedbackEvent.id) <= watermark)
        if after is not None:
            query = query.where(key > tuple_(*after))
        rows = session.execute(
            query.order_by(
                col(FeedbackEvent.user_id), col(FeedbackEvent.event_time), col(FeedbackEvent.id)
            ).limit(batch_rows)
        ).all()
        if not rows:
            return
        kept = [
            row
            for row in rows
            if row[0] not in exclude_users and (negative is None or not negative(row[4], row[5]))
        ]
        if weight is None:
            yield [(user, item) for user, item, *_ in kept]
        else:
            yield [(user, item, weight(kind, value)) for user, item, _, _, kind, value in kept]
        last = rows[-1]
        after = (last[0], last[2], int(last[3] or 0))


def user_sequences(
    session: Session, *, watermark: int, batch_rows: int = 100_000
) -> dict[str, list[str]]:
    """Every user's item ids ordered by event time, for events with id <= watermark, as
    Python lists: for small data and tests; training streams user_event_pages instead."""
    sequences: dict[str, list[str]] = defaultdict(list)
    for page in user_event_pages(session, watermark=watermark, batch_rows=batch_rows):
        for row in page:
            sequences[row[0]].append(row[1])
    return dict(sequences)


def item_popularity(session: Session, *, limit: int) -> list[tuple[str, int]]:
    """The ``limit`` most frequent items as (item_id, event count), most popular first."""
    count = func.count().label("n")
    rows = session.exec(
        select(FeedbackEvent.item_id, count)
        .group_by(FeedbackEvent.item_id)
        .order_by(count.desc(), FeedbackEvent.item_id)
        .limit(limit)
    ).all()
    return [(item, int(n)) for item, n in rows]


def count_events_after(session: Session, *, watermark: int) -> int:
    """Events stored after feedback row ``watermark`` (new data since a model's watermark)."""
    query = select(func.count()).select_from(FeedbackEvent).where(col(FeedbackEvent.id) > watermark)
    return int(session.exec(query).one())


def recent_events(session: Session, *, user_id: str, limit: int) -> list[tuple[str, str, datetime]]:
    """The user's newest ``limit`` events as (item_id, kind, event_time), oldest first."""
    rows = session.exec(
        select(FeedbackEvent.item_id, FeedbackEvent.kind, FeedbackEvent.event_time)
        .where(FeedbackEvent.user_id == user_id)
        .order_by(col(FeedbackEvent.event_time).desc(), col(FeedbackEvent.id).desc())
        .limit(limit)
    ).all()
    return [(item, kind, when) for item, kind, when in reversed(rows)]


def recent_item_counts(
    session: Session, *, item_ids: Sequence[str], since: datetime
) -> dict[str, int]:
    """Events per item since ``since`` (items without any are left out)."""
    counts: dict[str, int] = {}
    for start in range(0, len(item_ids), IN_CHUNK):
        chunk = list(item_ids[start : start + IN_CHUNK])
        rows = session.execute(
            select(FeedbackEvent.item_id, func.count())
            .where(col(FeedbackEvent.item_id).in_(chunk))
            .where(col(FeedbackEvent.event_time) >= since)
            .group_by(FeedbackEvent.item_id)
        )
        counts.update({item: int(n) for item, n in rows.all()})
    return counts


def insert_rows_sqlite(
    raw: Any, rows: Sequence[Any]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Stores event rows (EventRow tuples: event_id, user_id, item_id, kind, value,
    event_time, recommendation_id) through a SQLite DBAPI connection, one prepared
    statement each; returns (event_id, user_id) of those that were new, and of those
    refused because their user was deleted after the event's time (user_tombstone). The
    caller commits."""
    to_db = sqlite_time_processor()
    now = to_db(utcnow())
    stored: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    cursor = raw.cursor()
    try:
        deleted = _tombstones_sqlite(cursor, {e.user_id for e in rows})
        for e in rows:
            when = to_db(e.event_time)
            if e.user_id in deleted and when < deleted[e.user_id]:
                refused.append((e.event_id, e.user_id))
                continue
            row = (
                *(e.event_id, e.user_id, e.item_id, e.kind, e.value),
                *(when, e.recommendation_id, now),
            )
            cursor.execute(SQLITE_INSERT_EVENT, row)
            if cursor.fetchall():
                stored.append((e.event_id, e.user_id))
    finally:
        cursor.close()
    return stored, refused


def _tombstones_sqlite(cursor: Any, users: set[str]) -> dict[str, str]:
    """user -> deletion time (as stored text) for the deleted users among ``users``."""
    found: dict[str, str] = {}
    listed = sorted(users)
    for start in range(0, len(listed), 500):
        chunk = listed[start : start + 500]
        cursor.execute(
            "SELECT user_id, deleted_at FROM user_tombstone"
            f" WHERE user_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        found.update(cursor.fetchall())
    return found


def create_incoming_table(cursor: Any) -> None:
    """The session's temporary table that a PostgreSQL batch is COPYed into (emptied at
    each commit)."""
    cursor.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS recserve_incoming ("
        " ord integer, event_id text, user_id text, item_id text, kind text,"
        " value double precision, event_time timestamptz, recommendation_id text"
        ") ON COMMIT DELETE ROWS"
    )


def insert_rows_postgres(
    cursor: Any, rows: Sequence[Any]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """COPYs event rows into the incoming table, then moves the new ones into
    feedback_event in arrival order (the first of repeated ids wins) with one
    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, leaving out events of users deleted
    after the event's time (user_tombstone); returns (event_id, user_id) of those stored,
    and of those refused so. ``cursor`` is a psycopg cursor; the caller commits."""
    with cursor.copy(
        "COPY recserve_incoming (ord, event_id, user_id, item_id, kind, value,"
        " event_time, recommendation_id) FROM STDIN"
    ) as copy:
        for i, e in enumerate(rows):
            copy.write_row((i, *e[:6], e.recommendation_id))  # EventRow's fields, in order
    cursor.execute(
        "SELECT DISTINCT i.event_id, i.user_id FROM recserve_incoming i"
        " JOIN user_tombstone t ON t.user_id = i.user_id AND i.event_time < t.deleted_at"
    )
    refused = [(event_id, user_id) for event_id, user_id in cursor.fetchall()]
    cursor.execute(
        "INSERT INTO feedback_event"
        " (event_id, user_id, item_id, kind, value, event_time, recommendation_id,"
        "  received_time)"
        " SELECT event_id, user_id, item_id, kind, value, event_time, recommendation_id,"
        "  %s FROM ("
        "  SELECT DISTINCT ON (event_id) * FROM recserve_incoming"
        "  ORDER BY event_id, ord) AS fresh"
        " WHERE NOT EXISTS (SELECT 1 FROM user_tombstone t"
        "  WHERE t.user_id = fresh.user_id AND fresh.event_time < t.deleted_at)"
        " ORDER BY ord"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, user_id",
        (utcnow(),),
    )
    return [(event_id, user_id) for event_id, user_id in cursor.fetchall()], refused


def users_after(session: Session | Connection, *, row: int, limit: int) -> list[tuple[int, str]]:
    """(row id, user id) of the events stored after feedback row ``row``, oldest first, at
    most ``limit``: how a replica without a change feed learns whose history changed."""
    query = (
        select(FeedbackEvent.id, FeedbackEvent.user_id)
        .where(col(FeedbackEvent.id) > row)
        .order_by(col(FeedbackEvent.id))
        .limit(limit)
    )
    return [(int(i), str(u)) for i, u in session.execute(query).all()]


def received_since(
    session: Session, *, since: datetime
) -> list[tuple[str, str, datetime, str | None]]:
    """(user, item, event time, recommendation id) of the events received since ``since``."""
    query = select(
        FeedbackEvent.user_id,
        FeedbackEvent.item_id,
        FeedbackEvent.event_time,
        FeedbackEvent.recommendation_id,
    ).where(col(FeedbackEvent.received_time) >= since)
    return [tuple(row) for row in session.exec(query).all()]  # type: ignore[misc]


def stored_event_ids(session: Session | Connection, *, event_ids: Sequence[str]) -> set[str]:
    """Which of ``event_ids`` are stored."""
    stored: set[str] = set()
    for start in range(0, len(event_ids), IN_CHUNK):
        chunk = list(event_ids[start : start + IN_CHUNK])
        query = select(FeedbackEvent.event_id).where(col(FeedbackEvent.event_id).in_(chunk))
        stored.update(str(row[0]) for row in session.execute(query).all())
    return stored
