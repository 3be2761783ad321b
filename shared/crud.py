"""Every database query recserve makes: typed functions with keyword-only arguments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol

from sqlalchemy import String, cast, delete, func, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from shared.errors import FailedPrecondition, NotFound, StaleAttempt
from shared.models import (
    TRAINING_LOCK,
    FeedbackEvent,
    FlaggedUser,
    Impression,
    Item,
    Job,
    JobCreate,
    JobKind,
    JobStatus,
    ModelActivation,
    ModelStatus,
    ModelVersion,
    OnlineMetric,
    Replica,
    TrafficArm,
    as_utc,
    utcnow,
)

JOB_LOG_LINES = 200
_IN_CHUNK = 500  # bound on bind parameters per IN (...) query


# --- feedback events ---------------------------------------------------------------------


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
    """An event to store: FeedbackEventCreate, or shared.ingest.EventRow (the fast path)."""

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
    """SQLAlchemy's own datetime -> text conversion for the event_time column on SQLite,
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
    table = FeedbackEvent.__table__  # type: ignore[attr-defined]
    sqlite_text = session.get_bind().dialect.name == "sqlite"
    when = cast(table.c.event_time, String) if sqlite_text else table.c.event_time
    statement = (
        select(table.c.item_id, when)
        .where(table.c.user_id == user_id)
        .order_by(table.c.event_time.desc(), table.c.id.desc())
        .limit(limit)
    )
    rows = session.connection().execute(statement).all()
    if sqlite_text:  # naive UTC text; minus the naive epoch is what .timestamp() computes
        parse, epoch = datetime.fromisoformat, NAIVE_EPOCH
        return sorted(((parse(t) - epoch).total_seconds(), item) for item, t in rows)
    return sorted((t.timestamp(), item) for item, t in rows)


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


def delete_impressions_before(session: Session, *, before: datetime, limit: int) -> int:
    """Deletes up to ``limit`` impressions served before ``before``; returns how many."""
    ids = select(Impression.id).where(col(Impression.served_at) < before).limit(limit)
    result = session.execute(delete(Impression).where(col(Impression.id).in_(ids)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def count_events(session: Session, *, id_prefix: str = "") -> int:
    """Stored events, or only those whose event_id starts with ``id_prefix``."""
    query = select(func.count()).select_from(FeedbackEvent)
    if id_prefix:
        query = query.where(col(FeedbackEvent.event_id).startswith(id_prefix))
    return int(session.exec(query).one())


def max_event_row(session: Session) -> int:
    """The highest feedback_event.id (the data watermark), 0 when empty."""
    return int(session.exec(select(func.max(FeedbackEvent.id))).one() or 0)


def user_event_pages(
    session: Session,
    *,
    watermark: int,
    batch_rows: int = 100_000,
    exclude_users: frozenset[str] | set[str] = frozenset(),
) -> Iterator[list[tuple[str, str]]]:
    """(user_id, item_id) of every event with id <= watermark, ordered by user, then
    event time, then row id, in pages of ``batch_rows``.

    Keyset pagination on (user_id, event_time, id) walks ix_feedback_user_time, so each
    page is an index range scan and memory holds one page, however many events there are.
    Events of ``exclude_users`` are dropped from the pages.
    """
    key = tuple_(col(FeedbackEvent.user_id), col(FeedbackEvent.event_time), col(FeedbackEvent.id))
    after: tuple[str, datetime, int] | None = None
    while True:
        query = select(
            FeedbackEvent.user_id, FeedbackEvent.item_id, FeedbackEvent.event_time, FeedbackEvent.id
        ).where(col(FeedbackEvent.id) <= watermark)
        if after is not None:
            query = query.where(key > tuple_(*after))
        rows = session.exec(
            query.order_by(
                col(FeedbackEvent.user_id), col(FeedbackEvent.event_time), col(FeedbackEvent.id)
            ).limit(batch_rows)
        ).all()
        if not rows:
            return
        yield [(user, item) for user, item, _, _ in rows if user not in exclude_users]
        last = rows[-1]
        after = (last[0], last[2], int(last[3] or 0))


def user_sequences(
    session: Session, *, watermark: int, batch_rows: int = 100_000
) -> dict[str, list[str]]:
    """Every user's item ids ordered by event time, for events with id <= watermark, as
    Python lists: for small data and tests; training streams user_event_pages instead."""
    sequences: dict[str, list[str]] = defaultdict(list)
    for page in user_event_pages(session, watermark=watermark, batch_rows=batch_rows):
        for user, item in page:
            sequences[user].append(item)
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


# --- catalogue ---------------------------------------------------------------------------


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


def unavailable_items(session: Session) -> set[str]:
    return set(session.exec(select(Item.item_id).where(col(Item.available).is_(False))).all())


def item_titles(session: Session, *, item_ids: Sequence[str]) -> dict[str, str]:
    titles: dict[str, str] = {}
    unique = list(dict.fromkeys(item_ids))
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        rows = session.exec(select(Item.item_id, Item.title).where(col(Item.item_id).in_(chunk)))
        titles.update({item_id: title for item_id, title in rows.all()})
    return titles


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
        statement = statement.where(col(Item.item_id).in_(list(item_ids)[:_IN_CHUNK]))
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
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
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
    (or gets now). Returns (created, updated)."""
    by_id = {item.item_id: item for item in items}  # the last of repeated ids wins
    existing: dict[str, Item] = {}
    ids = list(by_id)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        existing.update(
            (row.item_id, row)
            for row in session.exec(select(Item).where(col(Item.item_id).in_(chunk)))
        )
    now = utcnow()
    for item_id, item in by_id.items():
        row = existing.get(item_id)
        if row is None:
            session.add(
                Item(
                    item_id=item_id,
                    title=item.title,
                    labels=list(item.labels),
                    available=item.available,
                    created_at=item.created_at or now,
                    updated_at=now,
                )
            )
        else:
            row.title, row.labels, row.available = item.title, list(item.labels), item.available
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


def recent_item_counts(
    session: Session, *, item_ids: Sequence[str], since: datetime
) -> dict[str, int]:
    """Events per item since ``since`` (items without any are left out)."""
    counts: dict[str, int] = {}
    for start in range(0, len(item_ids), _IN_CHUNK):
        chunk = list(item_ids[start : start + _IN_CHUNK])
        rows = session.execute(
            select(FeedbackEvent.item_id, func.count())
            .where(col(FeedbackEvent.item_id).in_(chunk))
            .where(col(FeedbackEvent.event_time) >= since)
            .group_by(FeedbackEvent.item_id)
        )
        counts.update({item: int(n) for item, n in rows.all()})
    return counts


# --- jobs --------------------------------------------------------------------------------


def create_job(session: Session, *, job: JobCreate) -> Job:
    """Creates a queued job. A training job takes the training lock: while another
    training job is queued or running this raises FailedPrecondition naming it."""
    row = Job.model_validate(job)
    if row.kind == JobKind.TRAIN:
        holder = training_lock_holder(session)
        if holder is not None:
            raise _busy(holder)
        row.lock_key = TRAINING_LOCK
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # another training job was queued meanwhile
        raise FailedPrecondition(
            "another training job was queued at the same moment; at most one training job "
            "is queued or running at a time (ListJobs shows it)"
        ) from exc
    return row


def _busy(holder: Job) -> FailedPrecondition:
    return FailedPrecondition(
        f"training job {holder.id} is {holder.status}; at most one training job is queued "
        f"or running at a time: wait for it or cancel it (CancelJob {holder.id})"
    )


def training_lock_holder(session: Session) -> Job | None:
    """The queued or running training job that holds the training lock, if any."""
    return session.exec(select(Job).where(Job.lock_key == TRAINING_LOCK)).first()


def get_job(session: Session, *, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist; ListJobs shows the existing ones")
    return job


def list_jobs(session: Session, *, limit: int) -> list[Job]:
    return list(session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit)).all())


def count_jobs_by_status(session: Session, *, statuses: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(statuses, 0)
    rows = session.exec(
        select(Job.status, func.count()).where(col(Job.status).in_(statuses)).group_by(Job.status)
    ).all()
    counts.update({str(status): int(n) for status, n in rows})
    return counts


def latest_training_job(session: Session) -> Job | None:
    return session.exec(
        select(Job).where(Job.kind == JobKind.TRAIN).order_by(col(Job.id).desc())
    ).first()


def newest_job_watermark(session: Session) -> int:
    """The highest data watermark any training job trained on, 0 when none did."""
    return int(session.exec(select(func.max(Job.data_watermark))).one() or 0)


def set_job_celery_id(session: Session, *, job_id: int, celery_id: str) -> None:
    session.execute(update(Job).where(col(Job.id) == job_id).values(celery_id=celery_id))


def claim_job(session: Session, *, job_id: int, worker: str) -> int | None:
    """Atomically moves the job from queued to running for ``worker``; returns the new
    attempt number, the fencing token that every later write of this attempt names.
    None when it is not queued (a redelivered message of a job that runs or ran, or a
    cancelled job): the caller must not run it."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            col(Job.id) == job_id,
            col(Job.status) == JobStatus.QUEUED,
            col(Job.cancel_requested).is_(False),
        )
        .values(
            status=JobStatus.RUNNING,
            worker=worker[:128],
            attempts=Job.attempts + 1,  # type: ignore[operator]
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error="",
            progress=0.0,
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    attempt = session.exec(select(Job.attempts).where(col(Job.id) == job_id)).one()
    return int(attempt)


def _current(attempt: int) -> Any:
    """The WHERE clause of a fenced write: the job runs, and ``attempt`` is its current."""
    return (col(Job.status) == JobStatus.RUNNING) & (col(Job.attempts) == attempt)


def heartbeat_job(session: Session, *, job_id: int, attempt: int) -> bool:
    """Records a sign of life of ``attempt``; False when it is no longer the job's
    current attempt (it must stop)."""
    result = session.execute(
        update(Job).where(col(Job.id) == job_id, _current(attempt)).values(heartbeat_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fence(session: Session, *, job_id: int, attempt: int) -> Job:
    """Locks the job's row until the transaction ends and returns it; raises StaleAttempt
    unless ``attempt`` is the job's current, running attempt. The writes that follow in
    the same transaction (a model version, its activation, the job's result) are then
    those of the current attempt, or none at all."""
    session.flush()  # this transaction's own pending changes are kept, not expired
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(select(Job.id).where(col(Job.id) == job_id).with_for_update())
    else:  # SQLite: the write lock first, so that what is read next is current
        connection.execute(update(Job).where(col(Job.id) == job_id).values(attempts=Job.attempts))
    session.expire_all()
    job = get_job(session, job_id=job_id)
    if job.status != JobStatus.RUNNING or job.attempts != attempt:
        raise StaleAttempt(
            f"attempt {attempt} of job {job_id} is no longer current (the job is {job.status}, "
            f"attempt {job.attempts}): its writes are refused"
        )
    return job


def reap_lost_jobs(
    session: Session, *, lost_after_s: float, max_attempts: int, now: datetime | None = None
) -> tuple[list[int], list[int]]:
    """Running jobs whose worker sent no heartbeat for ``lost_after_s``: each is requeued
    as a new attempt while it has attempts left (its lock kept; the caller publishes its
    message again), else failed (or cancelled, if an operator asked), which releases the
    training lock. The lost attempt's files are left alone: its worker may only be
    paused, and its writes are refused from now on. Returns (requeued, ended) job ids.
    ``now``: the clock (tests pass their own)."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=lost_after_s)
    lost = session.exec(
        select(Job).where(
            col(Job.status) == JobStatus.RUNNING,
            col(Job.heartbeat_at) < horizon,
        )
    ).all()
    requeued: list[int] = []
    ended: list[int] = []
    for job in lost:
        seen = job.heartbeat_at
        why = (
            f"attempt {job.attempts} lost: {job.worker or 'the worker'} sent no heartbeat "
            f"since {seen:%Y-%m-%d %H:%M:%S} UTC (more than {lost_after_s:.0f}s)"
            if seen
            else f"attempt {job.attempts} lost"
        )
        if not job.cancel_requested and job.attempts < max_attempts:
            job.status = JobStatus.QUEUED
            job.queued_at = now
            job.worker = ""
            job.heartbeat_at = None
            job.log = [*job.log, f"{utcnow():%H:%M:%S} {why}; requeued as attempt "
                       f"{job.attempts + 1} of {max_attempts}"][-JOB_LOG_LINES:]  # fmt: skip
            requeued.append(int(job.id or 0))
        else:
            status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
            suffix = "" if job.cancel_requested else f" (attempt {job.attempts} of {max_attempts})"
            _finish(job, status, why + suffix)
            ended.append(int(job.id or 0))
        session.add(job)
    return requeued, ended


def expire_queued_jobs(
    session: Session, *, queue_timeout_s: float, now: datetime | None = None
) -> list[int]:
    """Fails the jobs queued for longer than ``queue_timeout_s`` (their message never
    reached a worker: lost by the broker, or no worker listens), releasing the training
    lock; returns their ids."""
    horizon = (now or utcnow()) - timedelta(seconds=queue_timeout_s)
    stale = session.exec(
        select(Job).where(col(Job.status) == JobStatus.QUEUED, col(Job.queued_at) < horizon)
    ).all()
    for job in stale:
        _finish(
            job,
            JobStatus.FAILED,
            f"no worker took the job within {queue_timeout_s:.0f}s of queueing "
            "(worker.queue_timeout_s): its message was lost, or no worker listens on the queue",
        )
        session.add(job)
    return [int(job.id or 0) for job in stale]


def cancel_job(session: Session, *, job_id: int) -> Job:
    """A queued job is cancelled at once (its message is skipped when a worker gets it);
    a running one is flagged and stops at its next progress report. Cancelling a
    cancelled job again changes nothing."""
    job = get_job(session, job_id=job_id)
    if job.status == JobStatus.CANCELLED:
        return job
    if job.status == JobStatus.QUEUED:
        _finish(job, JobStatus.CANCELLED, "")
        job.cancel_requested = True
        job.log = [*job.log, f"{utcnow():%H:%M:%S} cancelled before it started"][-JOB_LOG_LINES:]
    elif job.status == JobStatus.RUNNING:
        job.cancel_requested = True
        job.log = [*job.log, f"{utcnow():%H:%M:%S} cancel requested"][-JOB_LOG_LINES:]
    else:
        raise FailedPrecondition(
            f"job {job_id} already finished ({job.status}); only queued or running jobs "
            "can be cancelled"
        )
    session.add(job)
    return job


def report_job_progress(
    session: Session,
    *,
    job_id: int,
    attempt: int,
    progress: float,
    message: str,
    log: bool = True,
    point: dict[str, float] | None = None,
) -> Job:
    """Records progress (and a learning-curve point) of ``attempt``; returns the job,
    whose cancel_requested tells the worker to stop. Raises StaleAttempt when ``attempt``
    is no longer the job's current one."""
    job = fence(session, job_id=job_id, attempt=attempt)
    job.progress = max(0.0, min(1.0, progress))
    job.message = message[:1024]
    job.heartbeat_at = utcnow()
    if log:
        job.log = [*job.log, f"{utcnow():%H:%M:%S} {message}"][-JOB_LOG_LINES:]
    if point is not None:
        job.curve = [*(job.curve or []), point]
    session.add(job)
    return job


def set_job_resolved(
    session: Session, *, job_id: int, attempt: int, resolved: list[dict[str, Any]]
) -> None:
    """Records the job's resolved parameters, each with its source and reason (fenced)."""
    fence(session, job_id=job_id, attempt=attempt)
    session.execute(update(Job).where(col(Job.id) == job_id).values(resolved=resolved))


def set_job_watermark(session: Session, *, job_id: int, attempt: int, watermark: int) -> None:
    fence(session, job_id=job_id, attempt=attempt)
    session.execute(update(Job).where(col(Job.id) == job_id).values(data_watermark=watermark))


def _finish(job: Job, status: JobStatus, error: str) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.error = error
    job.lock_key = None
    if error:
        job.log = [*job.log, f"{utcnow():%H:%M:%S} error: {error.splitlines()[0][:500]}"][
            -JOB_LOG_LINES:
        ]


def finish_job(
    session: Session,
    *,
    job_id: int,
    status: JobStatus,
    error: str = "",
    model_version: int | None = None,
    attempt: int | None = None,
    message: str = "",
) -> Job:
    """Ends the job and releases the training lock; ``message``, when given, is its last
    log line. With ``attempt`` (a worker ending its own run) the write is fenced:
    StaleAttempt when the attempt is no longer current."""
    job = (
        get_job(session, job_id=job_id)
        if attempt is None
        else fence(session, job_id=job_id, attempt=attempt)
    )
    _finish(job, status, error)
    if message:
        job.message = message[:1024]
        job.log = [*job.log, f"{utcnow():%H:%M:%S} {message}"][-JOB_LOG_LINES:]
    if status == JobStatus.SUCCEEDED:
        job.progress = 1.0
    if model_version is not None:
        job.model_version = model_version
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


def servable_models(session: Session) -> list[ModelVersion]:
    """Versions with a bundle that may be served (active, ready, retired), newest first."""
    return list(
        session.exec(
            select(ModelVersion)
            .where(
                col(ModelVersion.status).in_(
                    [ModelStatus.ACTIVE, ModelStatus.READY, ModelStatus.RETIRED]
                )
            )
            .order_by(col(ModelVersion.version).desc())
        )
    )


ACTIVATABLE = (ModelStatus.READY, ModelStatus.ACTIVE, ModelStatus.RETIRED)


def check_activatable(model: ModelVersion) -> None:
    if model.status not in ACTIVATABLE:
        raise FailedPrecondition(
            f"model version {model.version} has status {model.status}; "
            "only ready or retired versions can be activated"
        )


MODELS_LOCK = 7_256_001
"""PostgreSQL advisory lock key of model-version status changes (activation, pruning)."""


def lock_models(session: Session) -> None:
    """Serialises changes of model-version status until the transaction ends: activations
    and pruning, on any replica or worker. PostgreSQL: a transaction-scoped advisory lock.
    SQLite: the database's write lock, taken by a first write before anything is read, so
    that what the transaction reads next is what it writes over."""
    session.flush()  # this transaction's own pending changes are kept, not expired
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MODELS_LOCK})
    else:
        connection.execute(text("UPDATE model_version SET status = status WHERE version = 0"))


ACTIVATION_GRACE = timedelta(minutes=10)
"""How long a begun activation keeps its version from pruning (a server that began one and
died must not pin the version forever)."""


def begin_activation(session: Session, *, version: int) -> ModelVersion:
    """Marks ``version`` as being activated (its bundle is being loaded), under
    lock_models: pruning then leaves it alone. Raises NotFound or FailedPrecondition."""
    lock_models(session)
    session.expire_all()
    model = get_model_version(session, version=version)
    check_activatable(model)
    model.activating_since = utcnow()
    session.add(model)
    session.flush()
    return model


def end_activation(session: Session, *, version: int) -> None:
    """An activation that did not complete: the version may be pruned again."""
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.version) == version)
        .values(activating_since=None)
    )


def activate_model(session: Session, *, version: int, reason: str) -> ModelVersion:
    """Makes ``version`` the one active model; the previously active one becomes retired.
    The activation is recorded with the version it replaced and ``reason``. Runs under
    lock_models, so concurrent activations (and a prune) happen one after the other; the
    partial unique index on the active status is the database's own guarantee."""
    lock_models(session)
    session.expire_all()  # what was read before the lock may have changed
    model = get_model_version(session, version=version)
    check_activatable(model)
    previous = get_active_model(session)
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.status) == ModelStatus.ACTIVE, col(ModelVersion.version) != version)
        .values(status=ModelStatus.RETIRED)
    )
    model.status = ModelStatus.ACTIVE
    model.activated_at = utcnow()
    model.activating_since = None
    session.add(model)
    if previous is None or previous.version != version:
        session.add(
            ModelActivation(
                version=version,
                previous_version=previous.version if previous else None,
                activated_at=model.activated_at,
                reason=reason[:256],
            )
        )
    session.flush()
    return model


def list_activations(
    session: Session, *, limit: int, version: int | None = None
) -> list[ModelActivation]:
    """Activations, newest first (only those of ``version`` when given)."""
    statement = select(ModelActivation)
    if version is not None:
        statement = statement.where(ModelActivation.version == version)
    return list(session.exec(statement.order_by(col(ModelActivation.id).desc()).limit(limit)).all())


def last_activation(session: Session, *, version: int) -> ModelActivation | None:
    found = list_activations(session, limit=1, version=version)
    return found[0] if found else None


def rollback_target(session: Session) -> int:
    """The version that was active before the active one. FailedPrecondition when there
    is none, or it can no longer be activated."""
    active = get_active_model(session)
    if active is None:
        raise FailedPrecondition("no model is active, so there is nothing to roll back")
    last = last_activation(session, version=int(active.version or 0))
    if last is None or not last.previous_version:
        raise FailedPrecondition(
            f"model version {active.version} replaced no other version; nothing to roll back to"
        )
    check_activatable(get_model_version(session, version=last.previous_version))
    return last.previous_version


def prune_candidates(session: Session, *, keep_ready: int) -> list[ModelVersion]:
    """Versions whose bundles the retention rule lets go: all but the active version, the
    one active before it, the versions of the traffic split and its shadow, and the newest
    ``keep_ready`` ready versions (failed ones too)."""
    keep: set[int] = {arm.version for arm in traffic_arms(session)}
    active = get_active_model(session)
    if active is not None:
        keep.add(int(active.version or 0))
        last = last_activation(session, version=int(active.version or 0))
        if last is not None and last.previous_version:
            keep.add(last.previous_version)
    ready = session.exec(
        select(ModelVersion.version)
        .where(ModelVersion.status == ModelStatus.READY)
        .order_by(col(ModelVersion.version).desc())
        .limit(keep_ready)
    ).all()
    keep.update(int(v or 0) for v in ready)
    candidates = session.exec(
        select(ModelVersion).where(
            col(ModelVersion.status).in_(
                [ModelStatus.READY, ModelStatus.RETIRED, ModelStatus.FAILED]
            )
        )
    ).all()
    horizon = utcnow() - ACTIVATION_GRACE
    return sorted(
        (
            m
            for m in candidates
            if int(m.version or 0) not in keep
            and (m.activating_since is None or as_utc(m.activating_since) < horizon)
        ),
        key=lambda m: int(m.version or 0),
    )


def claim_prune(session: Session, *, version: int, keep_ready: int) -> bool:
    """Marks ``version`` pruned if the retention rule still lets it go, under lock_models:
    a version activated (or made the rollback target) since the candidates were listed is
    kept. True when the caller may delete its bundle: the mark comes first, so an
    activation that follows finds the version pruned and refuses it."""
    lock_models(session)
    session.expire_all()
    if version not in {
        int(m.version or 0) for m in prune_candidates(session, keep_ready=keep_ready)
    }:
        return False
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.version) == version)
        .values(status=ModelStatus.PRUNED, size_bytes=0)
    )
    return True


# --- replicas ----------------------------------------------------------------------------


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


# --- experiments ---------------------------------------------------------------------


def traffic_arms(session: Session) -> list[TrafficArm]:
    """The split's arms (by version), then the shadow if there is one."""
    rows = session.exec(select(TrafficArm).order_by(col(TrafficArm.version))).all()
    return [r for r in rows if not r.shadow] + [r for r in rows if r.shadow]


def set_traffic_arms(session: Session, *, arms: Sequence[TrafficArm]) -> None:
    """Replaces the split (and the shadow) in one transaction."""
    session.execute(delete(TrafficArm))
    for arm in arms:
        session.add(TrafficArm(version=arm.version, weight=arm.weight, shadow=arm.shadow))


def latest_online_metrics(session: Session) -> list[OnlineMetric]:
    """The newest row per (model version, arm)."""
    rows = session.exec(select(OnlineMetric).order_by(col(OnlineMetric.id).desc()).limit(500))
    newest: dict[tuple[int, str], OnlineMetric] = {}
    for row in rows.all():
        newest.setdefault((row.model_version, row.arm), row)
    return sorted(newest.values(), key=lambda r: (r.arm == "", r.model_version, r.arm))
