"""GPU checks in one short script: `python -m bench.gpu_check [OUTPUT.json]`.

For a machine with an NVIDIA GPU. On an ML-1M-sized model (random weights; 3,416 items,
history 200, d=64, 2 blocks) it checks the torch-CUDA backend (with and without CUDA
graphs) and, where `tensorrt` imports, the TensorRT backend against ONNX Runtime on CPU,
then measures histories per second at several batch sizes for each. Prints a table and
writes JSON. Exits non-zero when a parity check fails.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _throughput(encode: Any, history: np.ndarray, seconds: float = 1.0) -> float:
    encode(history)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encode(history)
        runs += 1
    return runs * history.shape[0] / (time.perf_counter() - started)


def check_backend(
    name: str, backend: Any, reference: Any, rng: np.random.Generator
) -> tuple[float, float, dict[int, float]]:
    """A backend's largest difference from the ONNX Runtime CPU reference over padded and
    full histories, its tolerance, and its sequences per second by batch size."""
    from bench.serve_stage import BENCH_CONFIG

    worst = 0.0
    for batch, length in [(1, 1), (3, 17), (64, 200), (256, 200)]:
        history = rng.integers(1, BENCH_CONFIG.num_items + 1, size=(batch, length))
        history[0, : length // 2] = 0
        diff = np.abs(backend.encode(history) - reference.encode(history)).max()
        worst = max(worst, float(diff))
    tolerance = 5e-2 if "fp16" in name else 1e-3
    rates = {}
    for batch in (1, 16, 64, 256) if name != "onnxruntime-cpu" else (1, 16, 64):
        history = rng.integers(1, BENCH_CONFIG.num_items + 1, size=(batch, 200))
        rates[batch] = _throughput(backend.encode, history)
    print(
        f"{name:<20} parity {worst:.2e} (tol {tolerance:g})  "
        + "  ".join(f"b{b}: {r:,.0f}/s" for b, r in rates.items()),
        flush=True,
    )
    return worst, tolerance, rates


def main(argv: list[str]) -> int:
    import torch

    from bench.serve_stage import BENCH_CONFIG
    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.backends.torch_cuda import TorchBackend
    from shared.model import bundle as bundle_format
    from shared.model.sasrec import SASRec
    from shared.model.tensorrt_engine import tensorrt_available
    from worker.export import write_bundle

    out = Path(argv[0]) if argv else Path("gpu-check.json")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = SASRec(BENCH_CONFIG).eval()
        vocab = [str(i) for i in range(1, BENCH_CONFIG.num_items + 1)]
        popularity = np.ones(BENCH_CONFIG.num_items + 1)
        path = Path(tmp) / "bundle"
        write_bundle(path, model=model, vocab=vocab, popularity=popularity, metrics={})
        loaded = bundle_format.load(path)
        backends: dict[str, Any] = {
            "onnxruntime-cpu": OnnxRuntimeBackend(loaded.onnx_path),
            "torch-cuda": TorchBackend(loaded, cuda_graphs=False),
            "torch-cuda-graphs": TorchBackend(loaded, cuda_graphs=True),
        }
        if tensorrt_available():
            from server.backends.tensorrt import TensorRTBackend

            backends["tensorrt-fp16"] = TensorRTBackend(loaded, max_batch=256)
        rng = np.random.default_rng(0)
        reference = backends["onnxruntime-cpu"]
        result: dict[str, Any] = {
            "device": torch.cuda.get_device_name(),
            "parity": {},
            "seq_per_s": {},
        }
        ok = True
        for name, backend in backends.items():
            worst, tolerance, rates = check_backend(name, backend, reference, rng)
            result["parity"][name] = {"max_abs_diff": worst, "tolerance": tolerance}
            result["seq_per_s"][name] = rates
            ok &= worst <= tolerance
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
