"""The build-engine job: a TensorRT engine for a registered model version, built on the GPU
worker that will serve with it (GPU workers listen on worker.gpu_queue).

Queued by the BuildEngine admin call, or after each training job when
``worker.build_engines`` is set (shared/training/jobs.py). The engine is built from the bundle's
ONNX graph with one optimisation profile over batch size and history length, in FP16 or
BF16 with layer norm and softmax kept in FP32 (shared/model/tensorrt_engine.py), and checked
against ONNX Runtime on random histories before it is recorded in the bundle's
engines/checksums.json; an engine that disagrees is deleted and the job fails.

Verified: written against the TensorRT 10 Python API; the job's lifecycle (queueing,
claiming, failing with a clear reason where no GPU or `tensorrt` is present) is tested
on CPU. Building and the parity check run only where `tensorrt` and a CUDA device exist.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.tensorrt_engine import Precision, cached_engine, current_key, tensorrt_available
from shared.storage import job_store, model_store
from shared.storage.engine import engine_for, session_scope
from shared.storage.tables import JobStatus

PARITY_RTOL = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}
"""Largest difference of an engine's states from ONNX Runtime's, relative to their scale."""


def run_build_engine_job(settings: Settings, job_id: int) -> dict[str, Any] | None:
    """Claims build-engine job ``job_id`` and runs it; the job records the outcome."""
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            attempt = job_store.claim_job(session, job_id=job_id, worker="gpu-worker")
            params = job_store.get_job(session, job_id=job_id).params
        if attempt is None:
            return None
        try:
            result = build_engine_for_version(
                settings, int(params["version"]), str(params.get("precision", "fp16"))
            )
        except Exception as exc:
            with session_scope(engine) as session:
                job_store.finish_job(
                    session, job_id=job_id, attempt=attempt, status=JobStatus.FAILED,
                    error=f"{type(exc).__name__}: {exc}",
                )  # fmt: skip
            return None
        with session_scope(engine) as session:
            job_store.finish_job(
                session, job_id=job_id, attempt=attempt, status=JobStatus.SUCCEEDED,
                model_version=int(params["version"]), message=f"engine {result['engine']}",
            )  # fmt: skip
        return result
    finally:
        engine.dispose()


def build_engine_for_version(settings: Settings, version: int, precision: str) -> dict[str, Any]:
    """Builds (or finds cached and verified) the engine for ``version`` on this GPU and
    checks it against ONNX Runtime; returns its path and the parity figure."""
    if not tensorrt_available():
        raise RuntimeError(
            "build-engine needs `tensorrt` and a CUDA device on this worker: run it on a "
            f"GPU worker listening on {settings.worker.gpu_queue}"
        )
    engine = engine_for(settings)
    try:
        with session_scope(engine) as session:
            model = model_store.get_model_version(session, version=version)
        loaded = bundle_format.load(settings.bundle_path(model.artifact_path))
    finally:
        engine.dispose()
    key = current_key(
        cast(Precision, precision), settings.server.max_batch_size, loaded.config.max_len
    )
    path = cached_engine(loaded.onnx_path, loaded.engines_dir, key)
    worst = engine_parity(loaded, settings.server.max_batch_size, precision)
    if worst > PARITY_RTOL[precision]:
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"the {precision} engine differs from ONNX Runtime by {worst:.2e} (relative), "
            f"over {PARITY_RTOL[precision]:.0e}: not kept"
        )
    return {"version": version, "engine": str(path), "parity_rel_diff": worst}


def engine_parity(loaded: bundle_format.Bundle, max_batch: int, precision: str) -> float:
    """The largest relative difference of the engine's states from ONNX Runtime's."""
    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.backends.tensorrt import TensorRTBackend

    reference = OnnxRuntimeBackend(loaded.onnx_path, intra_op_threads=1)
    candidate = TensorRTBackend(loaded, max_batch=max_batch, precision=cast(Precision, precision))
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, length in ((1, loaded.config.max_len), (min(8, max_batch), 5), (max_batch, 1)):
        history = rng.integers(1, loaded.config.num_items + 1, size=(batch, length))
        expected, got = reference.encode(history), candidate.encode(history)
        scale = float(np.abs(expected).max()) or 1.0
        worst = max(worst, float(np.abs(expected - got).max()) / scale)
    candidate.close()
    reference.close()
    return worst
