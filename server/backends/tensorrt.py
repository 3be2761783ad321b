"""TensorRT backend (NVIDIA GPUs), built from the bundle's ONNX graph.

The engine is cached per TensorRT version, GPU compute capability, precision and
shape profile (shared/model/tensorrt_engine.py). torch provides the CUDA buffers and stream;
it is only imported on this GPU path. Each calling thread gets its own execution
context. Written against the TensorRT 10 Python API; tested only where `tensorrt` and a
GPU exist (tests/server/test_tensorrt.py skips otherwise).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from server.backends.base import Backend
from shared.model.bundle import EXTRA_TOKENS, Bundle
from shared.model.tensorrt_engine import Precision, cached_engine, current_key


class TensorRTBackend(Backend):
    name = "tensorrt"
    computes_scores = True

    def __init__(self, bundle: Bundle, *, max_batch: int, precision: Precision = "fp16") -> None:
        import tensorrt as trt
        import torch

        self._torch = torch
        key = current_key(precision, max_batch, bundle.config.max_len)
        path = cached_engine(bundle.onnx_path, bundle.engines_dir, key)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not deserialize engine {path}")
        self._max_batch = max_batch
        self._d_model = bundle.config.d_model
        if bundle.config.property_tokens:
            width = int(self._engine.get_tensor_shape(EXTRA_TOKENS)[1])
            self.extra_tokens = np.zeros((1, width), np.int64)
        self._local = threading.local()
        self.device = torch.cuda.get_device_name()

    def _context(self) -> tuple[Any, Any]:
        ctx = getattr(self._local, "context", None)
        if ctx is None:
            ctx = self._engine.create_execution_context()
            self._local.context = ctx
            self._local.stream = self._torch.cuda.Stream()
        return ctx, self._local.stream

    def encode(self, history: np.ndarray) -> np.ndarray:
        return self._run(history, scores=False)[0]

    def encode_with_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The engine's state and scores outputs, both computed on the GPU."""
        states, scores = self._run(history, scores=True)
        assert scores is not None
        return states, scores

    def _run(self, history: np.ndarray, *, scores: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if history.shape[0] > self._max_batch:
            parts = [
                self._run(history[i : i + self._max_batch], scores=scores)
                for i in range(0, history.shape[0], self._max_batch)
            ]
            states = np.concatenate([p[0] for p in parts])
            if not scores:
                return states, None
            return states, np.concatenate([p[1] for p in parts if p[1] is not None])
        torch = self._torch
        context, stream = self._context()
        with torch.cuda.stream(stream):
            inputs = torch.from_numpy(history.astype(np.int64, copy=False)).cuda(non_blocking=True)
            batch = inputs.shape[0]
            state = torch.empty((batch, self._d_model), dtype=torch.float32, device="cuda")
            scores_shape = tuple(self._engine.get_tensor_shape("scores"))[1:]
            item_scores = torch.empty((batch, *scores_shape), dtype=torch.float32, device="cuda")
            context.set_input_shape("history", tuple(inputs.shape))
            context.set_tensor_address("history", inputs.data_ptr())
            extra = self.extra_tokens
            if extra is not None:
                tokens = torch.from_numpy(extra).cuda(non_blocking=True)
                context.set_input_shape(EXTRA_TOKENS, tuple(tokens.shape))
                context.set_tensor_address(EXTRA_TOKENS, tokens.data_ptr())
            context.set_tensor_address("state", state.data_ptr())
            context.set_tensor_address("scores", item_scores.data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            result = state.cpu()
            copied = item_scores.cpu() if scores else None
        stream.synchronize()
        return result.numpy(), None if copied is None else copied.numpy()
