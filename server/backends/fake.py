"""A small deterministic backend for tests (like httpx's MockTransport)."""

from __future__ import annotations

import threading

import numpy as np

from server.backends.base import Backend


class FakeBackend(Backend):
    """state = the item-embedding row of the newest event, so the top item is the one
    whose embedding best matches the last item. Records every batch it ran."""

    name = "fake"

    def __init__(self, item_embeddings: np.ndarray, delay_s: float = 0.0) -> None:
        self.item_embeddings = item_embeddings.astype(np.float32)
        self.delay_s = delay_s
        self.batches: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def encode(self, history: np.ndarray) -> np.ndarray:
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        with self._lock:
            self.batches.append(history.shape)
        return np.asarray(self.item_embeddings[history[:, -1]])
