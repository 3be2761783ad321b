"""Per-user encoded state, keyed by model version and history version.

A returning user whose history has not changed since the last Recommend costs only the
scoring (state @ item_embeddings.T), not a model run, nor a copy and id-to-row mapping of
the history: the entry keeps the history's model rows for the seen-item mask. Entries
for an older model version or an older history version never match, so hot swaps and
Feedback stay correct. Memory is bounded: at most ``max_users`` entries (D float32 and
up to 512 int64 rows each), least recently used dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import NamedTuple

import numpy as np

from server import metrics


class UserState(NamedTuple):
    state: np.ndarray
    """float32 [D], the model's encoding of the history."""
    seen: np.ndarray
    """int64 model rows of every known item in the history, oldest first."""


class StateCache:
    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        # Least recently used first: a hit or a put moves the entry to the end.
        self._states: OrderedDict[str, tuple[int, int, UserState]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def get(self, user_id: str, model_version: int, history_version: int) -> UserState | None:
        """The entry for exactly these versions, or None (always for history version 0)."""
        entry = self._states.get(user_id)
        if entry is not None and entry[0] == model_version and entry[1] == history_version:
            self._states.move_to_end(user_id)
            self.hits += 1
            metrics.STATE_HIT.inc()
            return entry[2]
        self.misses += 1
        metrics.STATE_MISS.inc()
        return None

    def adopt(
        self, user_id: str, model_version: int, history_version: int, seen: np.ndarray, max_len: int
    ) -> UserState | None:
        """After the user's history was read again (its cache entry expired, or another
        replica's events invalidated it) under a new history version: the entry for the
        old version still holds when the model would read the same newest ``max_len``
        rows. It is then re-keyed to ``history_version`` with the new ``seen`` and
        returned (a hit); otherwise None (a miss is counted by the get before)."""
        entry = self._states.get(user_id)
        if entry is None or entry[0] != model_version or history_version == 0:
            return None
        old = entry[2]
        if not np.array_equal(old.seen[-max_len:], seen[-max_len:]):
            return None
        state = UserState(old.state, seen)
        self._states[user_id] = (model_version, history_version, state)
        self._states.move_to_end(user_id)
        self.hits += 1
        metrics.STATE_HIT.inc()
        return state

    def put(self, user_id: str, model_version: int, history_version: int, state: UserState) -> None:
        if self.max_users == 0 or history_version == 0:
            return
        self._states[user_id] = (model_version, history_version, state)
        self._states.move_to_end(user_id)
        if len(self._states) > self.max_users:
            self._states.popitem(last=False)

    def recent(self, limit: int) -> list[str]:
        """Up to ``limit`` cached users, the most recently used first."""
        return list(islice(reversed(self._states), limit))

    def has(self, user_id: str) -> bool:
        return user_id in self._states

    def invalidate(self, user_ids: list[str]) -> None:
        for user_id in user_ids:
            self._states.pop(user_id, None)

    def clear(self) -> None:
        self._states.clear()
