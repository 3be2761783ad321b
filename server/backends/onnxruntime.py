"""ONNX Runtime backend (CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.backends.base import Backend
from server.memory import heap_pools_runs
from shared.model.bundle import EXTRA_TOKENS


class OnnxRuntimeBackend(Backend):
    """Runs model.onnx's ``state`` output on the CPU execution provider.

    Tuned for serving beside a gRPC event loop: all graph optimisations, intra-op threads
    that do not spin when idle (spinning threads steal the cores the gRPC loop needs), and
    in a server process, no per-session memory arena: the process heap pools run memory
    for every loaded session, so a hot swap does not grow a second arena
    (server/memory.py; elsewhere the arena stays, as fast without a tuned heap). A session is
    thread-safe for concurrent ``run`` calls.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, *, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = not heap_pools_runs()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.device = "cpu"
        for graph_input in self._session.get_inputs():
            if graph_input.name == EXTRA_TOKENS:
                self.extra_tokens = np.zeros((1, int(graph_input.shape[1])), np.int64)

    def _feeds(self, history: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"history": history.astype(np.int64, copy=False)}
        extra = self.extra_tokens
        if extra is not None:
            feeds[EXTRA_TOKENS] = extra
        return feeds

    def encode(self, history: np.ndarray) -> np.ndarray:
        (state,) = self._session.run(["state"], self._feeds(history))
        return np.asarray(state, dtype=np.float32)

    def scores_width(self) -> int:
        (scores,) = self._session.run(["scores"], self._feeds(np.ones((1, 1), dtype=np.int64)))
        return int(np.asarray(scores).shape[1])
