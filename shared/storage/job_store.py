"""Jobs: creation, fenced attempts, heartbeats, progress, reaping and the training lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from shared.storage.tables import (
    TRAINING_LOCK,
    Job,
    JobCreate,
    JobKind,
    JobStatus,
    utcnow,
)
from shared.wire.errors import FailedPrecondition, NotFound, StaleAttempt

JOB_LOG_LINES = 200


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
            attempts=Job.attempts + 1,
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
