"""Model versions for tests: another registered version of the template's model."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from shared.storage import model_store
from shared.storage.engine import session_scope
from shared.storage.tables import ModelStatus, ModelVersion


def register_copy(
    engine: Engine, artifact_path: str | None = None, status: ModelStatus = ModelStatus.READY
) -> int:
    """Registers a version (ready by default) with version 1's record, on version 1's
    bundle or on ``artifact_path``; returns its number."""
    with session_scope(engine) as s:
        v1 = model_store.get_model_version(s, version=1)
        model = model_store.create_model_version(
            s,
            model=ModelVersion(
                status=status,
                metrics=v1.metrics,
                artifact_path=artifact_path or v1.artifact_path,
                config=v1.config,
                checksum=v1.checksum,
                size_bytes=v1.size_bytes,
            ),
        )
        return int(model.version or 0)
