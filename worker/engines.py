"""The build-engine job: a TensorRT engine for a registered model version (GPU workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from shared import bundle as bundle_format
from shared import crud
from shared.config import Settings
from shared.db import engine_for, session_scope
from shared.tensorrt_engine import Precision, cached_engine, current_key, tensorrt_available


def build_engine_for_version(settings: Settings, version: int, precision: str) -> dict[str, Any]:
    """Builds (or finds cached) the engine for ``version`` on this GPU; returns its path."""
    if not tensorrt_available():
        raise RuntimeError("build-engine needs `tensorrt` and a CUDA device on this worker")
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            model = crud.get_model_version(session, version=version)
        loaded = bundle_format.load(Path(model.artifact_path))
    finally:
        engine.dispose()
    key = current_key(
        cast(Precision, precision), settings.server.max_batch_size, loaded.config.max_len
    )
    path = cached_engine(loaded.onnx_path, loaded.engines_dir, key)
    return {"version": version, "engine": str(path)}
