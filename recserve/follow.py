"""Following a job to its end from the command line. A read of the job that fails for a
passing reason (the database briefly unreachable or locked) is retried with backoff,
and said, instead of ending the follower (shared/client/retry.py)."""

from __future__ import annotations

import subprocess
import sys
import time

from sqlalchemy.engine import Engine

from recserve.embedded import start_worker, worker_running
from shared.client.retry import retrying_sync
from shared.config import Settings
from shared.storage import job_store
from shared.storage.engine import session_scope
from shared.storage.tables import Job, JobStatus
from shared.training.joblog import unseen_lines

FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def follow_job(
    settings: Settings, engine: Engine, job_id: int, *, start_worker_if_needed: bool
) -> int:
    """Prints the job's log lines as they appear; returns 0 when it succeeded.

    On the embedded broker, starts a worker child process when none is running and
    stops it at the end.
    """
    child: subprocess.Popen[bytes] | None = None
    if start_worker_if_needed and settings.embedded_broker and not worker_running(settings):
        child = start_worker(settings)
        print(
            f"started an embedded worker (pid {child.pid}, log {settings.data_dir / 'worker.log'})"
        )
    last: str | None = None
    try:
        while True:
            job = retrying_sync(lambda: _read(engine, job_id), what=f"reading job {job_id}")
            for line in unseen_lines(list(job.log), last):
                print(f"  [{job.progress * 100:5.1f}%] {line}", flush=True)
                last = line
            if job.status in FINISHED:
                break
            if child is not None and child.poll() is not None:
                print(
                    f"the worker exited with code {child.returncode}; see its log", file=sys.stderr
                )
                return 1
            time.sleep(0.5)
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    if job.status != JobStatus.SUCCEEDED:
        print(
            f"job {job_id} {job.status}: {job.error.splitlines()[0] if job.error else ''}",
            file=sys.stderr,
        )
        return 1
    print(f"job {job_id} succeeded: model version {job.model_version}")
    return 0


def _read(engine: Engine, job_id: int) -> Job:
    from shared.storage.engine import unavailable_on_db_error

    with unavailable_on_db_error(), session_scope(engine) as session:
        return job_store.get_job(session, job_id=job_id)
