"""States kept fresh: after Feedback, and for the model a hot swap is about to serve.

``warm`` runs before a hot swap (the registry calls it with the incoming and outgoing
models): it encodes with the incoming model the most recently served users whose
histories are in memory (at most server.swap_warm_users), and stores their states for
it. Without this, every returning user misses the state cache at the same moment and
the model queue overflows.

The encoding yields to serving: each run takes a run slot of the outgoing model's batcher
only while no request waits for the model (DynamicBatcher.run_when_idle), holds as many
histories as the outgoing model's recent runs say take WARM_RUN_S, so a request that
arrives meanwhile waits at most that long, and is followed by a rest that keeps the
encoding to WARM_SHARE of the time. After server.swap_warm_s the swap goes ahead with the
users encoded so far. Entries go into the cache only at the end, when the caller swaps
without yielding, so the outgoing model keeps its own entries until then; a user whose
history changes meanwhile simply misses (the history version differs).

``refresh`` runs after Feedback: returning users are re-encoded in the background, so
their next Recommend costs only the scoring, with the incoming model too while a swap is
being prepared (encoded then, the state is ready at the swap instead of missing with the
many others that changed during the pre-encoding).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from server.history import Entry
from server.pipeline.encoder import Encoder, known_rows, run_model
from server.pipeline.tasks import BackgroundTasks
from server.served_model import ServingModel
from server.state_cache import UserState
from shared.config import ServerSettings
from shared.model.histories import left_pad
from shared.wire.errors import Overloaded

log = logging.getLogger(__name__)
WARM_RUN_S = 0.005
"""How long one pre-encoding run before a hot swap may hold the model."""
WARM_SHARE = 0.25
"""The most of the time pre-encoding before a hot swap takes, in the model's idle gaps:
at a half (the model's whole idle time, or a run for every pause), Feedback commits and
the event loop starved for cores during swaps on 2 cores."""


@dataclass
class Staging:
    """States for the model a hot swap is about to serve, kept out of the state cache
    until the swap (the outgoing model's entries serve until then)."""

    model: ServingModel
    states: dict[str, tuple[int, UserState]] = field(default_factory=dict)

    def keep(self, user_id: str, history_version: int, entry: UserState) -> None:
        """Keeps the state of the newer history (history versions only grow)."""
        held = self.states.get(user_id)
        if held is None or held[0] < history_version:
            self.states[user_id] = (history_version, entry)

    async def refresh(self, user_id: str, history_version: int, seen: np.ndarray) -> None:
        """Encodes a changed history with the incoming model (its own batcher: idle until
        the swap, and these runs teach it its costs before it serves)."""
        try:
            computed = await run_model(self.model, seen)
        except Overloaded:
            return  # the user misses once after the swap, as without this
        self.keep(user_id, history_version, UserState(computed.state, computed.seen))


class Prewarm:
    def __init__(
        self, settings: ServerSettings, encoder: Encoder, background: BackgroundTasks
    ) -> None:
        self._settings = settings
        self._encoder = encoder
        self._background = background
        self._incoming: Staging | None = None

    async def warm(self, model: ServingModel, outgoing: ServingModel | None) -> int:
        """Encodes for ``model`` the users recently served by ``outgoing`` (module
        docstring); returns how many."""
        states, history = self._encoder.states, self._encoder.history
        limit = self._settings.swap_warm_users
        if not states.max_users or not limit or outgoing is None:
            return 0
        recent = states.recent(limit)
        run_size = outgoing.batcher.histories_within(WARM_RUN_S)
        deadline = time.monotonic() + self._settings.swap_warm_s
        staging = self._incoming = Staging(model)
        try:
            for start in range(0, len(recent), run_size):
                if time.monotonic() > deadline:
                    log.warning(
                        "model version %s: %d of %d users encoded in swap_warm_s (%gs); swapping",
                        model.version,
                        len(staging.states),
                        len(recent),
                        self._settings.swap_warm_s,
                    )
                    break
                # Only the cached tuples are taken here; the items' rows are looked up with
                # the run, on the model's thread (a lookup of thousands of long histories
                # on the event loop would stop it for a noticeable time).
                chunk = [
                    (user_id, cached)
                    for user_id in recent[start : start + run_size]
                    if user_id not in staging.states
                    and (cached := history.peek_events(user_id)) is not None
                    and cached[1]
                ]
                if chunk:
                    encoded = await outgoing.batcher.run_when_idle(
                        partial(encode_cached, model, chunk), share=WARM_SHARE
                    )
                    for user_id, version, entry in encoded:
                        staging.keep(user_id, version, entry)
        finally:
            self._incoming = None
        order = {user_id: n for n, user_id in enumerate(recent)}
        staged = sorted(staging.states.items(), key=lambda kv: order.get(kv[0], -1), reverse=True)
        for user_id, (version, entry) in staged:  # the most recent ends up last
            states.put(user_id, model.version, version, entry)
        return len(staged)

    async def refresh(self, model: ServingModel | None, user_ids: set[str]) -> None:
        """After Feedback: re-encodes the users whose states are cached (module docstring)."""
        if model is None:
            return
        states, history = self._encoder.states, self._encoder.history
        for user_id in user_ids:
            if not (states.has(user_id) and history.is_cached(user_id)):
                continue
            items, version = await history.get_versioned(user_id)
            seen = known_rows(model, items)
            if seen.size and version:
                self._encoder.compute(model, user_id, version, seen)
            incoming = self._incoming
            if incoming is not None and version:
                seen = known_rows(incoming.model, items)
                if seen.size:
                    self._background.run(
                        incoming.refresh(user_id, version, seen), "refresh-incoming"
                    )


def encode_cached(
    model: ServingModel, chunk: list[tuple[str, tuple[tuple[Entry, ...], int]]]
) -> list[tuple[str, int, UserState]]:
    """A pre-encoding run (on the model's thread): the cached histories' known rows, then
    one encoding of the newest max_len of each."""
    users = []
    for user_id, (events, version) in chunk:
        seen = known_rows(model, [item for _, item in events])
        if seen.size:
            users.append((user_id, version, seen))
    if not users:
        return []
    max_len = model.bundle.config.max_len
    states = model.backend.encode(left_pad([seen[-max_len:] for _, _, seen in users]))
    return [
        (user_id, version, UserState(state, seen))
        for (user_id, version, seen), state in zip(users, states, strict=True)
    ]
