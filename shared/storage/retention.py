"""Retention: which model bundles to keep on disk, and how long data is kept.

Bundles (``prune``): kept are the active version, the version active before it (the
rollback target) and the newest ``keep_ready`` ready versions. Every other version with
a bundle (retired, older ready ones, failed ones) loses its bundle folder; its row stays,
with status ``pruned``, so its metrics and activation history remain readable.

Data (``apply_data_retention``, on beat's schedule): feedback events older than
``worker.retain_events_days`` (kept forever by default) and impressions older than
``worker.retain_impressions_days`` (90 days) are deleted, in batches of short
transactions so that writers never wait long behind them. Changes that replicas follow
(rule sets put or deleted) are kept CHANGES_KEPT: every replica has polled them long since.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.model.bundle import size_bytes
from shared.storage import change_feed, event_store, impression_store, model_store
from shared.storage.engine import session_scope
from shared.storage.tables import utcnow

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    pruned: list[int] = field(default_factory=list)
    freed_bytes: int = 0


def prune(settings: Settings, engine: Engine, *, keep_ready: int, dry_run: bool) -> PruneResult:
    """Deletes the bundles the retention rule lets go (or only lists them)."""
    result = PruneResult()
    with session_scope(engine) as session:
        candidates = model_store.prune_candidates(session, keep_ready=keep_ready)
    root = settings.bundles_dir.resolve()
    for model in candidates:
        version = int(model.version or 0)
        path = settings.bundle_path(model.artifact_path).resolve() if model.artifact_path else None
        freed = size_bytes(path) if path is not None and path.is_dir() else 0
        if dry_run:
            result.pruned.append(version)
            result.freed_bytes += freed
            continue
        # The database first: once marked, no activation can take the version, and a
        # version activated meanwhile is not marked (its bundle stays).
        with session_scope(engine) as session:
            claimed = model_store.claim_prune(session, version=version, keep_ready=keep_ready)
        if not claimed:
            log.info("version %s changed status while pruning; kept", version)
            continue
        result.pruned.append(version)
        result.freed_bytes += freed
        if path is not None and path.is_dir():
            if not path.is_relative_to(root):
                log.warning("version %s: %s is outside %s; left in place", version, path, root)
            else:
                shutil.rmtree(path, ignore_errors=True)
        log.info("pruned model version %s (%d bytes)", version, freed)
    return result


RETENTION_BATCH = 10_000
"""Rows one retention transaction deletes."""


CHANGES_KEPT = timedelta(days=1)


@dataclass
class RetentionResult:
    events: int = 0
    impressions: int = 0


def apply_data_retention(
    settings: Settings, engine: Engine, *, now: datetime | None = None
) -> RetentionResult:
    """Deletes the events and impressions older than their retention; returns how many."""
    now = now or utcnow()
    worker = settings.worker
    result = RetentionResult()
    if worker.retain_events_days:
        before = now - timedelta(days=worker.retain_events_days)
        result.events = _in_batches(engine, event_store.delete_events_before, before)
    if worker.retain_impressions_days:
        before = now - timedelta(days=worker.retain_impressions_days)
        result.impressions = _in_batches(engine, impression_store.delete_impressions_before, before)
    with session_scope(engine) as session:
        change_feed.delete_changes_before(session, before=now - CHANGES_KEPT)
    if result.events or result.impressions:
        log.info(
            "retention deleted %d events and %d impressions", result.events, result.impressions
        )
    return result


def _in_batches(engine: Engine, delete: Any, before: datetime) -> int:
    total = 0
    while True:
        with session_scope(engine) as session:
            deleted = int(delete(session, before=before, limit=RETENTION_BATCH))
        total += deleted
        if deleted < RETENTION_BATCH:
            return total
