"""The training job, start to finish, as plain functions (Celery calls them by job id).

1. read events up to a watermark and build per-user sequences;
2. leave-one-out split; 3. train with early stopping on validation NDCG@10;
4. evaluate on the test events (full ranking and 100 sampled negatives) beside the
   popularity baseline and the active model, all on the same split;
5. write the bundle (ONNX export + parity check) under models_dir/job-<id>-<attempt>;
6. register the version and promote it only if it beats the active model and popularity,
   after verifying the bundle as ActivateModel does.

Re-running a job is harmless: each attempt writes its own folder, a job that already
produced a version returns it, and every write of an attempt is fenced by its attempt
number (shared/training/jobs.py): a stale attempt that resumes after the reaper requeued its job
has its writes refused, stops, and removes its own folder.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.next_items import NextItems
from shared.model.params import TrainingParams, parse_training_params
from shared.storage import event_store, job_store, model_store, user_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import JobStatus, ModelStatus, ModelVersion
from shared.wire.errors import JobCancelled, RecserveError, StaleAttempt
from worker.catalogue import catalogue_snapshot, item_features
from worker.dataset import EvalSet, Split, UserSequences, leave_one_out, snapshot
from worker.evaluation import evaluate, popularity_scorer
from worker.metrics import job_finished
from worker.model_eval import evaluate_active, row_labels, should_activate
from worker.recipe import apply_recipe

log = logging.getLogger(__name__)
MIN_USERS = 2
INDEX_CALIBRATION_USERS = 2000


class Attempt:
    """One attempt of a job: its fencing token, and whether the database has told it
    that it was superseded (a heartbeat refused)."""

    def __init__(self, engine: Engine, job_id: int, number: int) -> None:
        self.engine, self.job_id, self.number = engine, job_id, number
        self.superseded = threading.Event()

    def check(self) -> None:
        if self.superseded.is_set():
            raise StaleAttempt(f"attempt {self.number} of job {self.job_id} was superseded")


class JobReporter:
    """Writes progress (and learning-curve points) to the job row and its log, fenced by
    the attempt; raises JobCancelled when an operator asked to cancel the job, and
    StaleAttempt when the attempt is no longer current."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.engine, self.job_id = attempt.engine, attempt.job_id

    def __call__(
        self,
        fraction: float,
        message: str,
        point: dict[str, float] | None = None,
        *,
        cancellable: bool = True,
    ) -> None:
        log.info("job %s: %s", self.job_id, message)
        self.attempt.check()
        with session_scope(self.engine) as session:
            job = job_store.report_job_progress(
                session,
                job_id=self.job_id,
                attempt=self.attempt.number,
                progress=fraction,
                message=message,
                point=point,
            )
            cancel = job.cancel_requested
        if cancel and cancellable:
            raise JobCancelled(f"job {self.job_id} was cancelled by an operator")


class Heartbeat:
    """A daemon thread that records a sign of life for a running attempt every
    ``every_s``, so the reaper can tell a long epoch from a dead worker. A heartbeat the
    database refuses marks the attempt superseded."""

    def __init__(self, attempt: Attempt, every_s: float) -> None:
        self._attempt, self._every_s = attempt, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{attempt.job_id}-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        attempt = self._attempt
        while not self._stop.wait(self._every_s):
            try:
                with session_scope(attempt.engine) as session:
                    alive = job_store.heartbeat_job(
                        session, job_id=attempt.job_id, attempt=attempt.number
                    )
            except Exception:  # the database is briefly unreachable: try again next beat
                log.warning("job %s: heartbeat not recorded", attempt.job_id, exc_info=True)
                continue
            if not alive:
                log.warning(
                    "job %s: attempt %s is no longer current; stopping it",
                    attempt.job_id,
                    attempt.number,
                )
                attempt.superseded.set()
                return


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_train_job(settings: Settings, job_id: int) -> int | None:
    """Runs train job ``job_id``; returns the model version it registered.

    The job runs only if this call moves it from queued to running (job_store.claim_job): a
    redelivered message of a job that runs elsewhere, ran already or was cancelled is
    dropped with a log line. A cancelled or failed run leaves no bundle behind.
    """
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            job = job_store.get_job(session, job_id=job_id)
            if job.status == JobStatus.SUCCEEDED and job.model_version:
                return job.model_version
            number = job_store.claim_job(session, job_id=job_id, worker=worker_name())
            status = job.status
        if number is None:
            log.warning("job %s is %s, not queued: not running it again", job_id, status)
            return None
        with session_scope(engine) as session:
            given = job_store.get_job(session, job_id=job_id).params
        attempt = Attempt(engine, job_id, number)
        try:
            return _run_attempt(settings, attempt, given)
        except StaleAttempt as exc:
            bundle_format.remove_job_output(settings.bundles_dir, job_id, number)
            log.warning("job %s: %s; what it made was discarded", job_id, exc)
            job_finished("train", "superseded", 0.0)
            return None
    finally:
        engine.dispose()


def _run_attempt(settings: Settings, attempt: Attempt, given: dict[str, Any]) -> int | None:
    """Trains and registers; records the outcome with fenced writes (StaleAttempt when
    the attempt was superseded: nothing of it is recorded)."""
    engine, job_id = attempt.engine, attempt.job_id
    params = parse_training_params(settings, given)
    from_settings = set(settings.training.model_fields_set)
    report = JobReporter(attempt)
    started = time.perf_counter()
    try:
        with Heartbeat(attempt, settings.worker.heartbeat_s):
            version = _train_and_register(
                settings, attempt, params, set(given or {}), from_settings, report
            )
    except (JobCancelled, StaleAttempt, Exception) as exc:
        bundle_format.remove_job_output(settings.bundles_dir, job_id, attempt.number)
        if isinstance(exc, StaleAttempt):
            raise
        cancelled = isinstance(exc, JobCancelled)
        error = str(exc) if cancelled else f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        with session_scope(engine) as session:
            job_store.finish_job(
                session,
                job_id=job_id,
                attempt=attempt.number,
                status=JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
                error=error,
            )
        job_finished("train", "cancelled" if cancelled else "failed", time.perf_counter() - started)
        if cancelled:
            return None
        raise
    job_finished("train", "succeeded", time.perf_counter() - started)
    if version is not None and settings.worker.build_engines:
        from shared.training.jobs import queue_engine_build

        try:
            queue_engine_build(settings, engine, version, settings.worker.engine_precision)
        except Exception:  # the model serves on ONNX Runtime until an engine exists
            log.warning("could not queue an engine build for version %s", version, exc_info=True)
    return version


def _train_and_register(
    settings: Settings,
    attempt: Attempt,
    params: TrainingParams,
    given: set[str],
    from_settings: set[str],
    report: JobReporter,
) -> int:
    import torch

    engine, job_id = attempt.engine, attempt.job_id
    torch.set_num_threads(settings.worker.torch_threads or os.cpu_count() or 1)
    started = time.perf_counter()
    with session_scope(engine) as session:
        watermark = event_store.max_event_row(session)
        job_store.set_job_watermark(
            session, job_id=job_id, attempt=attempt.number, watermark=watermark
        )
    # The events stream into a memory-mapped snapshot (4 bytes an event), read by the
    # split and the training batches in place; it is deleted with the job's scratch folder.
    with tempfile.TemporaryDirectory(prefix=f"recserve-job-{job_id}-") as scratch:
        with session_scope(engine) as session:
            flagged = user_store.flagged_user_ids(session) if params.exclude_flagged else set()
            # A negative event (settings.events) is never a target nor an input; the
            # others weigh in the loss as the kind table says.
            pages = event_store.user_event_pages(
                session,
                watermark=watermark,
                exclude_users=flagged,
                negative=settings.events.negative,
                weight=settings.events.weight if settings.events.weighted else None,
            )
            sequences = snapshot(pages, Path(scratch))
        if flagged:
            report(0.01, f"left out flagged users: {len(flagged):,} (training.exclude_flagged)")
        if sequences.weights is not None:
            report(0.01, "the loss weighs each target by its kind (events.kinds, events.ratings)")
        return _train_snapshot(
            settings, attempt, params, given, from_settings, report, sequences, watermark, started
        )


def _train_snapshot(
    settings: Settings,
    attempt: Attempt,
    params: TrainingParams,
    given: set[str],
    from_settings: set[str],
    report: JobReporter,
    sequences: UserSequences,
    watermark: int,
    started: float,
) -> int:
    """Resolves the parameters, trains, evaluates, writes the bundle and registers it:
    the job's result, or an exception."""
    from worker.training import train

    catalogue = catalogue_snapshot(attempt.engine)
    params, resolved, split = _resolve(
        attempt, params, given, from_settings, report, sequences, watermark
    )
    result = train(
        split,
        params,
        progress=lambda f, m, point=None: report(0.05 + 0.8 * f, m, point),
        properties=item_features(attempt.engine, split, report),
    )
    report(0.86, f"trained {result.epochs_run} epochs in {result.seconds:.1f}s; evaluating")
    metrics = _test_metrics(settings, attempt.engine, split, result)
    metrics.update(
        train_events=float(len(sequences.flat)),
        users=float(len(sequences)),
        wall_seconds=time.perf_counter() - started,
    )
    report(
        0.9,
        f"test ndcg@10 {metrics['ndcg@10']:.4f} hr@10 {metrics['hr@10']:.4f} | popularity "
        f"ndcg@10 {metrics['pop_ndcg@10']:.4f} hr@10 {metrics['pop_hr@10']:.4f}",
    )
    relative, checksum, metrics = _write(settings, attempt, params, split, result, metrics, report)
    config = {
        "model": result.model.config.model_dump(),
        "training": params.model_dump(),
        "sources": resolved,
        "catalogue": catalogue,
    }
    return _register(
        settings, attempt, params, relative, checksum, metrics, config, watermark, started
    )


def _resolve(
    attempt: Attempt,
    params: TrainingParams,
    given: set[str],
    from_settings: set[str],
    report: JobReporter,
    sequences: UserSequences,
    watermark: int,
) -> tuple[TrainingParams, list[dict[str, Any]], Split]:
    """The recipe fills what was not given, from the data; the choices are recorded on
    the job and reported; then the leave-one-out split."""
    params, decisions, choices = apply_recipe(
        params, given, sequences.lengths, len(sequences.vocab), from_settings=from_settings
    )
    resolved = [asdict(choice) for choice in choices]
    with session_scope(attempt.engine) as session:
        job_store.set_job_resolved(
            session, job_id=attempt.job_id, attempt=attempt.number, resolved=resolved
        )
    split = leave_one_out(sequences, validation_users=params.validation_users, seed=params.seed)
    if len(split.test.targets) < MIN_USERS:
        raise ValueError(
            f"not enough data to train: {len(split.test.targets)} users have 3 or more events; "
            f"at least {MIN_USERS} are needed (send more Feedback or run `recserve import`)"
        )
    report(
        0.02,
        f"loaded {len(sequences.flat)} events (watermark {watermark}): "
        f"{len(sequences)} users, {split.num_items} items",
    )
    for line in decisions:
        report(0.03, line)
    return params, resolved, split


def _test_metrics(
    settings: Settings, engine: Engine, split: Split, result: Any
) -> dict[str, float]:
    """The trained model, popularity and the active model on the test users, and the
    training's own figures."""
    from worker.training import torch_scorer

    device = next(result.model.parameters()).device
    with session_scope(engine) as session:
        labels = row_labels(session, split.vocab.items)
    common: dict[str, Any] = {"popularity": split.popularity, "labels": labels}
    metrics = evaluate(torch_scorer(result.model, device), split.test, split.num_items, **common)
    metrics.update(
        evaluate(
            popularity_scorer(split.popularity),
            split.test,
            split.num_items,
            prefix="pop_",
            **common,
        )  # fmt: skip
    )
    metrics.update(evaluate_active(settings, engine, split))
    metrics.update(
        {
            "epochs": float(result.epochs_run),
            "planned_epochs": float(result.planned_epochs),
            "best_epoch": float(result.best_epoch),
            "val_ndcg@10": result.best_val_ndcg,
            "train_seconds": result.seconds,
            "seconds_per_epoch": result.seconds_per_epoch,
            "items": float(split.num_items),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return metrics


def _write(
    settings: Settings,
    attempt: Attempt,
    params: TrainingParams,
    split: Split,
    result: Any,
    metrics: dict[str, float],
    report: JobReporter,
) -> tuple[str, str, dict[str, float]]:
    """The bundle in this attempt's own folder, verified as ActivateModel verifies:
    (its path under the bundles folder, its checksum, the metrics with the export's)."""
    from worker.export import write_bundle

    relative = bundle_format.job_dir_name(attempt.job_id, attempt.number)
    directory = settings.bundles_dir.resolve() / relative
    index_states = None
    if params.index_min_items and split.num_items >= params.index_min_items:
        report(0.92, f"{split.num_items:,} items: building the approximate top-k index")
        index_states = encode_states(result.model, split.valid.head(INDEX_CALIBRATION_USERS))
    checksum, metrics = write_bundle(
        directory,
        model=result.model,
        vocab=split.vocab.items,
        popularity=split.popularity,
        metrics=metrics,
        index_states=index_states,
        features=result.features,
        next_items=NextItems.count(
            split.train.flat, split.train.starts, split.train.ends, split.num_items + 1
        ),
    )
    parity = metrics["onnx_parity_max_rel_diff"]
    # The last point where a cancel takes effect: nothing is registered yet.
    report(0.95, f"bundle written to {directory} (ONNX parity {parity:.1e})")
    # Verified against the checksum about to be registered.
    if bundle_format.verify(directory) != checksum:
        raise RecserveError(f"bundle {directory} changed after it was written")
    return relative, checksum, metrics


def _register(
    settings: Settings,
    attempt: Attempt,
    params: TrainingParams,
    relative: str,
    checksum: str,
    metrics: dict[str, float],
    config: dict[str, Any],
    watermark: int,
    started: float,
) -> int:
    """One transaction, fenced: the version, its activation and the job's result are all
    this attempt's, or none of them is recorded. Returns the version."""
    job_id = attempt.job_id
    with session_scope(attempt.engine) as session:
        job = job_store.fence(session, job_id=job_id, attempt=attempt.number)
        deleted = user_store.deleted_since(session, since=job.started_at or job.created_at)
        model = model_store.create_model_version(
            session,
            model=ModelVersion(
                status=ModelStatus.READY,
                metrics={k: float(v) for k, v in metrics.items()},
                artifact_path=relative,
                data_watermark=watermark,
                config=config,
                checksum=checksum,
                job_id=job_id,
                size_bytes=bundle_format.size_bytes(settings.bundles_dir.resolve() / relative),
            ),
        )
        version = int(model.version or 0)
        promote, reason = should_activate(params, metrics, has_active="active_ndcg@10" in metrics)
        if promote:
            model_store.activate_model(session, version=version, reason=f"promoted by job {job_id}")
        job_store.finish_job(
            session,
            job_id=job_id,
            attempt=attempt.number,
            status=JobStatus.SUCCEEDED,
            model_version=version,
            message=f"registered model version {version}; {reason} "
            f"(total {time.perf_counter() - started:.1f}s)"
            + (
                f"; {deleted} user(s) were deleted (DeleteUser) while this job ran: their "
                "events may be in this model, so train again to forget them"
                if deleted
                else ""
            ),
        )
    return version


def encode_states(model: Any, eval_set: EvalSet, batch_size: int = 256) -> np.ndarray:
    """The served user states (float32 [U, D]) of ``eval_set``'s histories."""
    import torch

    from shared.model.histories import left_pad

    model = model.eval().cpu()
    states = []
    with torch.no_grad():
        for start in range(0, len(eval_set.targets), batch_size):
            chunk = eval_set.histories[start : start + batch_size]
            batch = torch.from_numpy(left_pad(chunk, model.config.max_len))
            states.append(model.encode_last(batch).float().numpy())
    return np.concatenate(states) if states else np.zeros((0, model.config.d_model), np.float32)
