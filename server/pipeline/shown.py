"""Shown-item capping, a part of the eligibility rule: an item shown to a user ``cap``
times in the last ``window`` with no event of the user on it since is left out of that
user's lists (server.shown_cap and server.shown_window_h; a request can override both,
or switch capping off with shown_cap -1).

**When a list counts.** When it is served: the serving replica records it here at once
(read-your-writes), before the impression log writes it in its next batch. The other
replicas count it once the batch is stored: on PostgreSQL its transaction announces the
users shown a list (topic "shown" on the change feed), on SQLite with several processes
they poll the impression table; either way a replica then reads that user's showings
again from the impression log on their next capped request, well within 2 seconds
(impressions are written every half second). A replica's own showings that the log has
not stored yet are kept beside what it reads, so nothing is counted twice or lost.

**What an interaction is.** Any stored event of the user on the item, by its event time,
as the user's cached history holds it: a click after the third showing resets that
item's count. Negative events take the item out of the user's lists for good anyway.

Bounded: at most ``server.shown_cache_users`` users (LRU) and MAX_LISTS lists per user.
With capping off server-wide (the default) only users a request capped are followed, and
the first such request reads their showings from the impression log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cachetools import LRUCache
from sqlalchemy.engine import Engine

from shared.config import ServerSettings
from shared.storage import impression_store
from shared.storage.engine import session_scope, unavailable_on_db_error
from shared.storage.tables import as_utc, utcnow

MAX_LISTS = 100
"""Lists kept per user: the newest (a cap above it would never be reached)."""
MAX_WINDOW_S = 720 * 3600.0
Shown = tuple[str, float, tuple[str, ...]]  # (recommendation id, served at epoch s, items)


@dataclass
class _User:
    lists: list[Shown] = field(default_factory=list)
    """The lists the impression log held when read, and this replica's since."""
    own: list[Shown] = field(default_factory=list)
    """This replica's lists not yet known to be stored (kept across re-reads)."""
    stale: bool = False
    """Another replica showed this user a list: read the impression log again."""


class ShownLog:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        settings: ServerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._executor = executor
        self.cap = settings.shown_cap
        self.window_s = settings.shown_window_h * 3600.0
        self._clock = clock
        self._users: LRUCache[str, _User] = LRUCache(settings.shown_cache_users)
        self.reads = 0

    def limits(self, cap: int, window_hours: float) -> tuple[int, float]:
        """A request's (cap, window in seconds): its own, else the server's; cap 0: off."""
        if cap < 0:
            return 0, 0.0
        return (cap or self.cap), (window_hours * 3600.0 if window_hours else self.window_s)

    def record(self, user_id: str, recommendation_id: str, items: Iterable[str]) -> None:
        """A list served to the user by this replica, counted from now on (kept for every
        user while capping is on server-wide, else for users a request capped)."""
        user = self._users.get(user_id)
        if user is None and not self.cap:
            return
        shown = (recommendation_id, self._clock(), tuple(items))
        if user is None:
            # Not read yet: the next capped request reads the log, and keeps this beside it.
            user = _User(stale=True)
            self._users[user_id] = user
        user.lists.append(shown)
        user.own.append(shown)
        del user.lists[:-MAX_LISTS]
        del user.own[:-MAX_LISTS]

    def forget(self, user_ids: Iterable[str]) -> None:
        """Other replicas showed these users lists: read them again when next asked."""
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is not None:
                user.stale = True

    def drop(self, user_id: str) -> None:
        """A deleted user: nothing of theirs is kept."""
        self._users.pop(user_id, None)

    def forget_everyone(self) -> None:
        for user in self._users.values():
            user.stale = True

    async def capped(
        self,
        user_id: str,
        cap: int,
        window_s: float,
        last_event: Callable[[], dict[str, float]],
    ) -> frozenset[str]:
        """The items shown to the user ``cap`` times or more within ``window_s`` with no
        event on them since (``last_event``: item -> newest event time, epoch seconds)."""
        user = self._users.get(user_id)
        if user is None or user.stale:
            user = await self._read(user_id, user)
        since = self._clock() - window_s
        counts: dict[str, int] = {}
        events: dict[str, float] | None = None
        for _, served, items in user.lists:
            if served < since:
                continue
            for item in items:
                counts[item] = counts.get(item, 0) + 1
        over = [item for item, count in counts.items() if count >= cap]
        if not over:
            return frozenset()
        events = last_event()
        if not events:
            return frozenset(over)
        left_out = set()
        for item in over:
            acted = events.get(item)
            if acted is None:
                left_out.add(item)
                continue
            after = sum(
                1
                for _, served, items in user.lists
                if served >= max(since, acted) and item in items
            )
            if after >= cap:
                left_out.add(item)
        return frozenset(left_out)

    async def _read(self, user_id: str, user: _User | None) -> _User:
        loop = asyncio.get_running_loop()
        since = utcnow() - timedelta(seconds=MAX_WINDOW_S)
        stored = await loop.run_in_executor(self._executor, self._select, user_id, since)
        self.reads += 1
        own = user.own if user is not None else []
        known = {rec for rec, _, _ in stored}
        own = [entry for entry in own if entry[0] not in known]  # the rest are stored now
        fresh = self._users.get(user_id)
        if fresh is not None and fresh is not user:
            own += [entry for entry in fresh.own if entry not in own]  # recorded meanwhile
        merged = sorted([*stored, *own], key=lambda entry: entry[1])[-MAX_LISTS:]
        current = _User(lists=merged, own=own)
        self._users[user_id] = current
        return current

    def _select(self, user_id: str, since: datetime) -> list[Shown]:
        with unavailable_on_db_error(), session_scope(self._engine) as session:
            rows = impression_store.shown_to(
                session,
                user_id=user_id,
                since=since,
                limit=MAX_LISTS,
            )
        return [(rec, as_utc(served).timestamp(), tuple(items)) for rec, served, items in rows]
