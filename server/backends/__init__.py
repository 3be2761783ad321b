"""Inference backends and the choice between them."""

from __future__ import annotations

import logging

from server.backends.base import Backend
from shared.config import ServerSettings
from shared.model.bundle import Bundle

log = logging.getLogger(__name__)


def create_backend(settings: ServerSettings, bundle: Bundle) -> Backend:
    """The configured backend for ``bundle``.

    auto: TensorRT when `tensorrt` imports and a CUDA device is present; torch on CUDA when
    torch is installed and a CUDA device is present; else ONNX Runtime on CPU (without
    importing torch). If TensorRT was chosen automatically and fails to build or load, ONNX Runtime
    serves instead (logged); an explicit ``tensorrt`` choice raises.
    """
    choice = settings.backend
    if choice == "noop":
        from server.backends.noop import NoopBackend

        return NoopBackend(bundle.config.d_model)
    if choice == "torch-cuda":
        from server.backends.torch_cuda import TorchBackend

        return TorchBackend(bundle)
    if choice in ("auto", "tensorrt"):
        from shared.model.tensorrt_engine import tensorrt_available

        if _nvidia_device_present() and tensorrt_available():  # no torch import on a CPU host
            from server.backends.tensorrt import TensorRTBackend

            try:
                return TensorRTBackend(bundle, max_batch=settings.max_batch_size)
            except Exception:
                if choice == "tensorrt":
                    raise
                log.exception("TensorRT backend failed; serving with ONNX Runtime on CPU")
        elif choice == "tensorrt":
            raise RuntimeError("backend=tensorrt needs `tensorrt` and a CUDA device")
        elif _torch_cuda_available():
            from server.backends.torch_cuda import TorchBackend

            return TorchBackend(bundle)
    from server.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(bundle.onnx_path, intra_op_threads=settings.intra_op_threads)


def _torch_cuda_available() -> bool:
    """True when torch is installed and sees a GPU. Checks for the package without
    importing it, so the CPU path never pays for (or depends on) torch."""
    import importlib.util

    if not _nvidia_device_present() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _nvidia_device_present() -> bool:
    import os

    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")
