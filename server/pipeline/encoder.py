"""The score stage's state: a user's history encoded by the model, as cheaply as it can be.

- **State cache** (server/state_cache.py): a returning user whose history has not changed
  since the last call costs only the scoring: no history copy, no id mapping, no run.
- **In flight**: right after a Feedback, the re-encoding it started is awaited instead of
  starting another; concurrent requests of one user share one run.
- **Adopted**: a history read again unchanged (an expired cache entry) keeps its state.
- Otherwise a run through the model's dynamic batcher (server/batcher.py), whose batch
  may also give the item scores (the backend's, or one matrix product for the batch).

After Feedback, ``refresh`` re-encodes returning users in the background, for the current
model and, while a hot swap is being prepared, for the incoming one (server/pipeline/
prewarm.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from server.history import HistoryCache
from server.served_model import ServingModel
from server.state_cache import StateCache, UserState


class Encoding(NamedTuple):
    """A history as the model encoded it."""

    state: np.ndarray
    """float32 [D], the user state."""
    scores: np.ndarray | None
    """float32 [N+1], every item's score when the run computed them (this request's own
    array: ranking changes it), else None."""
    seen: np.ndarray
    """int64 model rows of the history's known items, oldest first."""


def known_rows(model: ServingModel, items: Sequence[str]) -> np.ndarray:
    """Model rows of the history's items that the model knows, oldest first."""
    # map(dict.get) runs in C; unknown items come back as row 0 and are dropped.
    known = np.fromiter(map(model.rows.get, items, repeat(0)), dtype=np.int64, count=len(items))
    return known[known > 0]


class Encoder:
    def __init__(self, history: HistoryCache, states: StateCache) -> None:
        self.history = history
        self.states = states
        self._inflight: dict[tuple[str, int, int], asyncio.Future[Encoding]] = {}

    async def cached(self, model: ServingModel, user_id: str) -> Encoding | None:
        """The encoding of the user's cached, unchanged history without touching it: from
        the state cache, or an encoding in flight; None when neither holds it."""
        version = self.history.cached_version(user_id)  # 0: not cached
        hit = self.states.get(user_id, model.version, version)
        if hit is not None:
            return Encoding(hit.state, None, hit.seen)
        pending = self._inflight.get((user_id, model.version, version))
        if version and pending is not None:
            state, scores, seen = await asyncio.shield(pending)
            return Encoding(state, None if scores is None else scores.copy(), seen)
        return None

    async def encode(
        self, model: ServingModel, user_id: str, history_version: int, seen: np.ndarray
    ) -> Encoding:
        """``seen`` encoded by ``model``: adopted from the state cache when the history
        was read again unchanged, else a batched run (shared by concurrent callers of the
        same user and history version, and kept in the state cache)."""
        if history_version:
            kept = self.states.adopt(
                user_id, model.version, history_version, seen, model.bundle.config.max_len
            )
            if kept is not None:
                return Encoding(kept.state, None, kept.seen)
            computed = self.compute(model, user_id, history_version, seen)
            state, scores, _ = await asyncio.shield(computed)
            # The computation may serve several requests: each ranks its own copy.
            return Encoding(state, None if scores is None else scores.copy(), seen)
        encoded = await model.batcher.submit(seen[-model.bundle.config.max_len :])
        return Encoding(encoded.state, encoded.scores, seen)

    def compute(
        self, model: ServingModel, user_id: str, history_version: int, seen: np.ndarray
    ) -> asyncio.Future[Encoding]:
        """The run for (user, model, history version): one in flight at a time, its
        result stored in the state cache."""
        key = (user_id, model.version, history_version)
        pending = self._inflight.get(key)
        if pending is not None:
            return pending
        future = asyncio.ensure_future(run_model(model, seen))
        self._inflight[key] = future

        def store(done: asyncio.Future[Encoding]) -> None:
            if self._inflight.get(key) is not done:
                return  # forgotten while running (the user deleted): keep nothing
            del self._inflight[key]
            if not done.cancelled() and done.exception() is None:
                state, _, rows = done.result()
                self.states.put(user_id, model.version, history_version, UserState(state, rows))

        future.add_done_callback(store)
        return future

    def forget(self, user_ids: list[str]) -> None:
        """Drops the users' states, and the runs in flight for them (their results are
        then kept nowhere)."""
        self.states.invalidate(user_ids)
        gone = set(user_ids)
        for key in [key for key in self._inflight if key[0] in gone]:
            del self._inflight[key]

    def forget_everyone(self) -> None:
        self.states.clear()


async def run_model(model: ServingModel, seen: np.ndarray) -> Encoding:
    """One batched model run over the newest max_len of ``seen``."""
    encoded = await model.batcher.submit(seen[-model.bundle.config.max_len :])
    return Encoding(encoded.state, encoded.scores, seen)
