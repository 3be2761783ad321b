"""Building and caching TensorRT engines from a bundle's ONNX graph.

Used by the server's TensorRT backend (which builds on first load when no cached engine
fits) and by the GPU worker's build-engine task. ``tensorrt`` and ``torch`` (for the
CUDA device query) are imported inside the functions, never at import time.

Engines are cached in ``<bundle>/engines/`` under a name keyed by TensorRT version, GPU
compute capability, precision and shape profile, since an engine only runs on the
TensorRT version and GPU architecture that built it.

Verified: written against the TensorRT 10 Python API (Builder, OnnxParser,
IBuilderConfig, optimisation profiles, execute_async_v3). Not run on this CPU machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.model.bundle import EXTRA_TOKENS, MAX_EXTRA_ITEMS

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class EngineKey:
    trt_version: str
    compute_capability: tuple[int, int]
    precision: Precision
    max_batch: int
    max_len: int

    def filename(self) -> str:
        major, minor = self.compute_capability
        return (
            f"trt{self.trt_version}-sm{major}{minor}-{self.precision}"
            f"-b{self.max_batch}-l{self.max_len}.plan"
        )


def tensorrt_available() -> bool:
    """True when ``tensorrt`` imports and a CUDA device is present."""
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def current_key(precision: Precision, max_batch: int, max_len: int) -> EngineKey:
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return EngineKey(trt.__version__, (major, minor), precision, max_batch, max_len)


def build_engine(onnx_path: Path, key: EngineKey, *, workspace_bytes: int = 1 << 30) -> bytes:
    """Builds a serialized engine with one optimisation profile over batch size
    (1..max_batch) and history length (1..max_len). LayerNorm and softmax layers are
    kept in FP32 under FP16/BF16."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if key.precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if key.precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        keep_fp32 = {trt.LayerType.SOFTMAX, trt.LayerType.NORMALIZATION, trt.LayerType.REDUCE}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in keep_fp32:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    opt_batch = max(1, min(key.max_batch, 16))
    profile.set_shape("history", (1, 1), (opt_batch, key.max_len), (key.max_batch, key.max_len))
    for index in range(network.num_inputs):  # a model with item properties
        tensor = network.get_input(index)
        if tensor.name == EXTRA_TOKENS:
            width = tensor.shape[1]
            profile.set_shape(EXTRA_TOKENS, (1, width), (1024, width), (MAX_EXTRA_ITEMS, width))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    return bytes(serialized)


def cached_engine(onnx_path: Path, engines_dir: Path, key: EngineKey) -> Path:
    """The engine file for ``key``: checked against engines/checksums.json when it exists
    (BundleError when it fails), else built, written atomically and recorded there."""
    from shared.model.bundle import record_engine, verify_engine

    path = engines_dir / key.filename()
    if path.exists():
        verify_engine(path)
        return path
    engines_dir.mkdir(parents=True, exist_ok=True)
    log.info("building TensorRT engine %s from %s", path.name, onnx_path)
    data = build_engine(onnx_path, key)
    # Written outside the bundle, so that no unlisted file is ever inside it.
    bundle = engines_dir.parent
    tmp = bundle.parent / f".{bundle.name}-{path.name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(path)
    record_engine(path)
    return path
