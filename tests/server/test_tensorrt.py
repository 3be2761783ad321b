"""TensorRT backend parity against ONNX Runtime. Needs `tensorrt` and an NVIDIA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.model import bundle as bundle_format
from shared.model.tensorrt_engine import tensorrt_available

pytestmark = pytest.mark.skipif(
    not tensorrt_available(), reason="needs the `tensorrt` package and a CUDA device"
)


def test_tensorrt_matches_onnxruntime(trained_template: Path, tmp_path: Path) -> None:
    import shutil

    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.backends.tensorrt import TensorRTBackend

    source = next((trained_template / "models").iterdir())
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    loaded = bundle_format.load(copy)
    reference = OnnxRuntimeBackend(loaded.onnx_path)
    engine = TensorRTBackend(loaded, max_batch=16)
    assert list(loaded.engines_dir.glob("trt*-sm*-fp16-b16-l*.plan")), "engine cached"
    rng = np.random.default_rng(7)
    for batch, length in [(1, 1), (3, 5), (16, loaded.config.max_len)]:
        history = rng.integers(1, loaded.config.num_items + 1, size=(batch, length))
        np.testing.assert_allclose(
            engine.encode(history), reference.encode(history), rtol=2e-2, atol=2e-2
        )
