"""The backend interface: a user-state encoder over a bundle's inference graph."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """Runs the model. Implementations: ONNX Runtime (CPU), TensorRT (NVIDIA GPUs), and a
    fake for tests.

    ``encode`` may be called from several threads at once; implementations make that safe.
    """

    name: str = "backend"
    device: str = "cpu"
    computes_scores: bool = False
    """Whether ``encode_with_scores`` gives every item's score as computed where the model
    runs (a GPU): the server then ranks with those and does not compute them again."""
    extra_tokens: np.ndarray | None = None
    """Models with item properties: int64 [E, T], the property tokens of the items added
    after training (history rows N+1..N+E), fed to every run; a row of zeros until one
    is added. None for a model that knows items by id only."""

    def set_extra_tokens(self, tokens: np.ndarray) -> None:
        """Replaces the added items' tokens (one reference swap: a run in progress keeps
        the array it started with)."""
        if self.extra_tokens is None:
            raise RuntimeError(f"the {self.name} backend's model has no item properties")
        self.extra_tokens = np.ascontiguousarray(tokens, dtype=np.int64)

    @abstractmethod
    def encode(self, history: np.ndarray) -> np.ndarray:
        """history: int64 [B, L], left-padded with 0, 1 <= L <= the model's max_len.
        Returns float32 [B, D], the user state after each history's newest event.
        Raises RuntimeError when the runtime fails."""

    def encode_with_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As ``encode``, with the graph's ``scores``: (float32 [B, D], float32 [B, N+1]).
        Only for backends whose computes_scores is True."""
        raise NotImplementedError(f"the {self.name} backend leaves scoring to the server")

    def scores_width(self) -> int | None:
        """How many item rows the graph's own ``scores`` output has (N+1), or None when
        this backend does not compute scores itself."""
        return None

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Releases runtime resources; the backend is not used afterwards."""
