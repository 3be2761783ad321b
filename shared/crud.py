"""Every database query recserve makes: typed functions with keyword-only arguments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from shared.errors import FailedPrecondition, NotFound
from shared.models import (
    FeedbackEvent,
    FeedbackEventCreate,
    Item,
    Job,
    JobCreate,
    JobStatus,
    ModelStatus,
    ModelVersion,
    utcnow,
)

JOB_LOG_LINES = 200
_IN_CHUNK = 500  # bound on bind parameters per IN (...) query


# --- feedback events ---------------------------------------------------------------------


_EVENT_COLUMNS = ("event_id", "user_id", "item_id", "kind", "value", "event_time")
_SQLITE_INSERT_EVENT = (
    f"INSERT INTO feedback_event ({', '.join(_EVENT_COLUMNS)}, received_time) "
    f"VALUES ({', '.join('?' * (len(_EVENT_COLUMNS) + 1))}) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)


def _first_per_event_id(
    events: Sequence[FeedbackEventCreate],
) -> dict[str, FeedbackEventCreate]:
    """The events by id, the first of each repeated id kept, in order."""
    fresh: dict[str, FeedbackEventCreate] = {}
    for event in events:
        fresh.setdefault(event.event_id, event)
    return fresh


@cache
def _sqlite_time_processor() -> Callable[[datetime], str]:
    """SQLAlchemy's own datetime -> text conversion for the event_time column on SQLite."""
    from sqlalchemy.dialects.sqlite import pysqlite

    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    dialect = pysqlite.dialect()
    processor = table.c.event_time.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return processor  # type: ignore[no-any-return]


def insert_events_sqlite(
    dbapi_connection: Any, *, events: Sequence[FeedbackEventCreate]
) -> set[str]:
    """insert_events on a raw sqlite3 connection (the Feedback writer's hot path): the
    same rows, the same idempotency, about a third of the CPU of a Core transaction per
    commit. Times go through the column types' own bind processors, so they are stored
    exactly as SQLAlchemy stores them. The caller commits."""
    to_db = _sqlite_time_processor()
    now = to_db(utcnow())
    fresh = _first_per_event_id(events)
    stored: set[str] = set()
    cursor = dbapi_connection.cursor()
    try:
        for e in fresh.values():
            row = (e.event_id, e.user_id, e.item_id, e.kind, e.value, to_db(e.event_time), now)
            cursor.execute(_SQLITE_INSERT_EVENT, row)
            stored.update(r[0] for r in cursor.fetchall())
    finally:
        cursor.close()
    return stored


def insert_events(
    session: Session | Connection, *, events: Sequence[FeedbackEventCreate]
) -> set[str]:
    """Stores the events whose event_id is new; returns those event ids.

    Duplicates (already stored, or repeated within ``events``) are skipped, so the
    call is idempotent. The caller commits. ``session`` may be a plain Core connection
    (the Feedback writer's hot path: about half the CPU of an ORM session per commit).
    """
    fresh = _first_per_event_id(events)
    if not fresh:
        return set()
    now = utcnow()
    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    bind = session if isinstance(session, Connection) else session.get_bind()
    dialect = bind.dialect.name
    if dialect in ("sqlite", "postgresql"):
        # One statement: ON CONFLICT DO NOTHING skips stored ids (also ones a concurrent
        # writer stored meanwhile) and RETURNING names exactly the rows inserted.
        rows = [{**event.model_dump(), "received_time": now} for event in fresh.values()]
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
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        existing = (
            session.execute(
                select(FeedbackEvent.event_id).where(col(FeedbackEvent.event_id).in_(chunk))
            )
            .scalars()
            .all()
        )
        for event_id in existing:
            fresh.pop(event_id, None)
    if fresh:
        rows = [{**event.model_dump(), "received_time": now} for event in fresh.values()]
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


def count_events(session: Session, *, id_prefix: str = "") -> int:
    """Stored events, or only those whose event_id starts with ``id_prefix``."""
    query = select(func.count()).select_from(FeedbackEvent)
    if id_prefix:
        query = query.where(col(FeedbackEvent.event_id).startswith(id_prefix))
    return int(session.exec(query).one())


def max_event_row(session: Session) -> int:
    """The highest feedback_event.id (the data watermark), 0 when empty."""
    return int(session.exec(select(func.max(FeedbackEvent.id))).one() or 0)


def user_sequences(
    session: Session, *, watermark: int, batch_rows: int = 100_000
) -> dict[str, list[str]]:
    """Every user's item ids ordered by event time, for events with id <= watermark.

    Reads in keyset-paginated chunks so that memory holds the sequences, not the rows.
    """
    events: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    last_id = 0
    while True:
        rows = session.exec(
            select(
                FeedbackEvent.id,
                FeedbackEvent.user_id,
                FeedbackEvent.item_id,
                FeedbackEvent.event_time,
            )
            .where(col(FeedbackEvent.id) > last_id, col(FeedbackEvent.id) <= watermark)
            .order_by(col(FeedbackEvent.id))
            .limit(batch_rows)
        ).all()
        if not rows:
            break
        for row_id, user_id, item_id, event_time in rows:
            events[user_id].append((event_time, row_id or 0, item_id))
        last_id = rows[-1][0] or last_id
    return {user: [item for _, _, item in sorted(seq)] for user, seq in events.items()}


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


# --- catalogue ---------------------------------------------------------------------------


def upsert_items(session: Session, *, items: Iterable[Item]) -> int:
    n = 0
    for item in items:
        session.merge(item)
        n += 1
    return n


def unavailable_items(session: Session) -> set[str]:
    return set(session.exec(select(Item.item_id).where(col(Item.available).is_(False))).all())


def item_titles(session: Session, *, item_ids: Sequence[str]) -> dict[str, str]:
    if not item_ids:
        return {}
    rows = session.exec(select(Item.item_id, Item.title).where(col(Item.item_id).in_(item_ids)))
    return {item_id: title for item_id, title in rows.all()}


# --- jobs --------------------------------------------------------------------------------


def create_job(session: Session, *, job: JobCreate) -> Job:
    row = Job.model_validate(job)
    session.add(row)
    session.flush()
    return row


def get_job(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist; ListJobs shows the existing ones")
    return job


def list_jobs(session: Session, *, limit: int) -> list[Job]:
    return list(session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit)).all())


def set_job_celery_id(session: Session, *, job_id: int, celery_id: str) -> None:
    session.execute(update(Job).where(col(Job.id) == job_id).values(celery_id=celery_id))


def start_job(session: Session, *, job_id: int) -> Job:
    job = get_job(session, job_id=job_id)
    job.status = JobStatus.RUNNING
    job.started_at = utcnow()
    job.finished_at = None
    job.error = ""
    job.progress = 0.0
    session.add(job)
    return job


def report_job_progress(
    session: Session, *, job_id: int, progress: float, message: str, log: bool = True
) -> None:
    job = get_job(session, job_id=job_id)
    job.progress = max(0.0, min(1.0, progress))
    job.message = message[:1024]
    if log:
        job.log = [*job.log, f"{utcnow():%H:%M:%S} {message}"][-JOB_LOG_LINES:]
    session.add(job)


def finish_job(
    session: Session,
    *,
    job_id: int,
    status: JobStatus,
    error: str = "",
    model_version: int | None = None,
) -> Job:
    job = get_job(session, job_id=job_id)
    job.status = status
    job.finished_at = utcnow()
    job.error = error
    if status == JobStatus.SUCCEEDED:
        job.progress = 1.0
    if model_version is not None:
        job.model_version = model_version
    if error:
        job.log = [*job.log, f"{utcnow():%H:%M:%S} error: {error.splitlines()[0][:500]}"][
            -JOB_LOG_LINES:
        ]
    session.add(job)
    return job


# --- model versions ----------------------------------------------------------------------


def create_model_version(session: Session, *, model: ModelVersion) -> ModelVersion:
    session.add(model)
    session.flush()
    return model


def get_model_version(session: Session, *, version: int) -> ModelVersion:
    model = session.get(ModelVersion, version)
    if model is None:
        raise NotFound(
            f"model version {version} does not exist; ListModels shows the existing ones"
        )
    return model


def list_model_versions(session: Session, *, limit: int) -> list[ModelVersion]:
    return list(
        session.exec(select(ModelVersion).order_by(col(ModelVersion.version).desc()).limit(limit))
    )


def get_active_model(session: Session) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
        .order_by(col(ModelVersion.activated_at).desc())
    ).first()


def update_model_version(session: Session, *, version: int, **fields: Any) -> ModelVersion:
    model = get_model_version(session, version=version)
    for name, value in fields.items():
        setattr(model, name, value)
    session.add(model)
    return model


def activate_model(session: Session, *, version: int) -> ModelVersion:
    """Makes ``version`` the one active model; the previously active one becomes retired."""
    model = get_model_version(session, version=version)
    if model.status not in (ModelStatus.READY, ModelStatus.ACTIVE, ModelStatus.RETIRED):
        raise FailedPrecondition(
            f"model version {version} has status {model.status}; "
            "only ready or retired versions can be activated"
        )
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.status) == ModelStatus.ACTIVE, col(ModelVersion.version) != version)
        .values(status=ModelStatus.RETIRED)
    )
    model.status = ModelStatus.ACTIVE
    model.activated_at = utcnow()
    session.add(model)
    session.flush()
    return model
