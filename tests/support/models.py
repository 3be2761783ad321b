"""Model versions for tests: another registered version of the template's model."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from shared import crud
from shared.db import session_scope
from shared.models import ModelStatus, ModelVersion


def register_copy(engine: Engine) -> int:
    """Registers a ready version sharing version 1's bundle; returns its number."""
    with session_scope(engine) as s:
        v1 = crud.get_model_version(s, version=1)
        model = crud.create_model_version(
            s,
            model=ModelVersion(
                status=ModelStatus.READY,
                metrics=v1.metrics,
                artifact_path=v1.artifact_path,
                config=v1.config,
                checksum=v1.checksum,
            ),
        )
        return int(model.version or 0)
