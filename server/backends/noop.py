"""A backend that does no model work: the gRPC-stack ceiling of `recserve bench serve`."""

from __future__ import annotations

import numpy as np

from server.backends.base import Backend


class NoopBackend(Backend):
    """Returns zero states [B, D] without running anything; every other part of the
    request path (validation, history, batching, ranking, response) still runs."""

    name = "noop"

    def __init__(self, d_model: int) -> None:
        self.d_model = d_model

    def encode(self, history: np.ndarray) -> np.ndarray:
        return np.zeros((history.shape[0], self.d_model), dtype=np.float32)
