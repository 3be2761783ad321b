"""Bundle retention: which model bundles to keep on disk, and deleting the rest.

Kept: the active version, the version active before it (the rollback target) and the
newest ``keep_ready`` ready versions. Every other version with a bundle (retired, older
ready ones, failed ones) loses its bundle folder; its row stays, with status ``pruned``,
so its metrics and activation history remain readable.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from shared import crud
from shared.bundle import size_bytes
from shared.config import Settings
from shared.db import session_scope

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    pruned: list[int] = field(default_factory=list)
    freed_bytes: int = 0


def prune(settings: Settings, engine: Engine, *, keep_ready: int, dry_run: bool) -> PruneResult:
    """Deletes the bundles the retention rule lets go (or only lists them)."""
    result = PruneResult()
    with session_scope(engine) as session:
        candidates = crud.prune_candidates(session, keep_ready=keep_ready)
    root = settings.bundles_dir.resolve()
    for model in candidates:
        version = int(model.version or 0)
        path = settings.bundle_path(model.artifact_path).resolve() if model.artifact_path else None
        freed = size_bytes(path) if path is not None and path.is_dir() else 0
        result.pruned.append(version)
        result.freed_bytes += freed
        if dry_run:
            continue
        if path is not None and path.is_dir():
            if not path.is_relative_to(root):
                log.warning("version %s: %s is outside %s; left in place", version, path, root)
            else:
                shutil.rmtree(path, ignore_errors=True)
        with session_scope(engine) as session:
            crud.mark_pruned(session, version=version)
        log.info("pruned model version %s (%d bytes)", version, freed)
    return result
