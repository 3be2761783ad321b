"""torch backend for NVIDIA GPUs without TensorRT (also runs on CPU, for tests).

Loads the bundle's torch weights into shared.model.sasrec.SASRec and runs ``encode_last``
under ``torch.inference_mode``. On CUDA, batches are padded up to a bucket (batch to a
power of two, length to a multiple of 16) and each bucket's forward pass is captured once
as a CUDA graph and replayed, which removes the per-kernel launch overhead that
dominates a small model. Padding is harmless: all-padding rows are dropped from the
output and positions are counted from the newest event. Each thread gets its own
stream and graphs.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from server.backends.base import Backend
from shared.model.bundle import WEIGHTS, Bundle

LENGTH_STEP = 16


def _bucket_batch(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _bucket_length(n: int, max_len: int) -> int:
    return min(max_len, -(-n // LENGTH_STEP) * LENGTH_STEP)


class TorchBackend(Backend):
    name = "torch-cuda"

    def __init__(self, bundle: Bundle, *, device: str = "cuda", cuda_graphs: bool = True) -> None:
        import torch

        from shared.model.sasrec import SASRec

        self._torch = torch
        self._device = torch.device(device)
        model = SASRec(bundle.config)
        model.load_state_dict(torch.load(bundle.path / WEIGHTS, map_location="cpu"))
        self._model = model.eval().to(self._device)
        with torch.inference_mode():
            self._table = self._model.output_table().detach().to(self._device)  # [N+1, D]
        self._max_len = bundle.config.max_len
        if model.property_embedding is not None:
            self.extra_tokens = np.zeros((1, model.item_tokens.shape[1]), np.int64)
        # CUDA graphs fix their inputs' shapes: a model whose added items change the
        # extra tokens' shape runs without them.
        self._graphs_enabled = (
            cuda_graphs and self._device.type == "cuda" and self.extra_tokens is None
        )
        self._local = threading.local()
        self.name = "torch-cuda" if self._device.type == "cuda" else "torch-cpu"
        # On a GPU the scores come from the device; on a CPU the server's own product is
        # as fast and needs no second copy of the table.
        self.computes_scores = self._device.type == "cuda"
        self.device = (
            torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else "cpu"
        )

    def encode(self, history: np.ndarray) -> np.ndarray:
        return np.asarray(self._states(history).float().cpu().numpy())

    def encode_with_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States and every item's score, the product computed on the device."""
        torch = self._torch
        states = self._states(history).float()
        with torch.inference_mode():
            scores = states @ self._table.T  # [B, D] @ [D, N+1] -> [B, N+1]
        return states.cpu().numpy(), scores.cpu().numpy()

    def _states(self, history: np.ndarray) -> Any:
        """float [B, D] on the device (a view of a graph's output: read it at once)."""
        torch = self._torch
        batch, length = history.shape
        if not self._graphs_enabled:
            extra = self.extra_tokens
            with torch.inference_mode():
                tensor = torch.from_numpy(history.astype(np.int64, copy=False)).to(self._device)
                tokens = None if extra is None else torch.from_numpy(extra).to(self._device)
                return self._model.encode_last(tensor, tokens)
        b, L = _bucket_batch(batch), _bucket_length(length, self._max_len)
        graph, static_in, static_out = self._graph(b, L)
        static_in.zero_()
        static_in[:batch, L - length :].copy_(torch.from_numpy(history), non_blocking=True)
        graph.replay()
        return static_out[:batch]

    def _graph(self, batch: int, length: int) -> tuple[Any, Any, Any]:
        torch = self._torch
        graphs = getattr(self._local, "graphs", None)
        if graphs is None:
            graphs = self._local.graphs = {}
            self._local.stream = torch.cuda.Stream(self._device)
        key = (batch, length)
        if key not in graphs:
            static_in = torch.zeros((batch, length), dtype=torch.int64, device=self._device)
            stream = self._local.stream
            stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):  # warm-up before capture, as CUDA graphs require
                    self._model.encode_last(static_in)
            torch.cuda.current_stream(self._device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self._model.encode_last(static_in)
            graphs[key] = (graph, static_in, static_out)
        captured: tuple[Any, Any, Any] = graphs[key]
        return captured
