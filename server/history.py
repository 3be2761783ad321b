"""Per-user recent history: an LRU cache over the database, bounded by its measured size
in bytes (not its user count: 100,000 users of 512 events would be gigabytes), appended
by Feedback.

A miss reads the user's newest events from the database. Feedback appends to a cached
entry after its commit, so the next Recommend sees it without a database read. Events
appended while a read is in flight are merged into its result, so a read that started
before a commit cannot hide the new event.

An entry older than its time to live (the safety net behind the cross-replica
invalidations) is revalidated: one query counts the user's stored events, and only when
the count differs from the entry's (the events read plus those appended since) is the
history read again. An unchanged history keeps its version, so its encoded states still
hold: re-reading every expired history in full would make each expiry a burst of
database reads, re-encodings and collector work under load. With the database unreachable,
an expired entry is served as it is until the database answers again.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from cachetools import LRUCache
from sqlalchemy.engine import Engine

from server import metrics
from shared.storage import event_store
from shared.storage.engine import session_scope, unavailable_on_db_error
from shared.wire.errors import DatabaseUnavailable

HISTORY_KEEP = 512
"""Events kept per user; at least any model's max_len."""

Entry = tuple[float, str]  # (event time, epoch seconds; item_id)
_versions = itertools.count(1)
_ENTRY_BYTES = sys.getsizeof((0.0, "")) + sys.getsizeof(0.0)
"""An event's (time, item) tuple and its float; the item id's string is measured apiece,
and its slot in the history tuple by that tuple's getsizeof."""
_USER_BYTES = 400
"""A cached user's fixed part: the _Cached object and its attributes, the LRU's links."""


def event_bytes(entry: Entry) -> int:
    return _ENTRY_BYTES + sys.getsizeof(entry[1])


def negatives_bytes(negatives: frozenset[str]) -> int:
    """What a user's set of negative items holds (nothing for none: the empty frozenset
    is shared)."""
    if not negatives:
        return 0
    return sys.getsizeof(negatives) + sum(map(sys.getsizeof, negatives))


def history_bytes(user_id: str, events: tuple[Entry, ...]) -> int:
    """What a cached history takes in memory, as sys.getsizeof measures its parts (the
    tests compare it with tracemalloc)."""
    return (
        _USER_BYTES + sys.getsizeof(user_id) + sys.getsizeof(events) + sum(map(event_bytes, events))
    )


@dataclass
class _Cached:
    events: tuple[Entry, ...]
    """A tuple of (time, item) tuples, replaced (never changed) by an append: once the
    collector has seen them, tuples of numbers and strings are untracked, so a full
    collection skips the whole history. As lists, every event of every cached user would
    be visited by each full collection, with the event loop stopped meanwhile."""
    nbytes: int = 0
    """history_bytes() of the entry, kept up to date by appends (the LRU's weight)."""
    version: int = field(default_factory=lambda: next(_versions))
    """Unique across loads and appends, so (user, version) names one exact history."""
    stored: int = 0
    """The user's events in the database as of the read, plus those appended since."""
    negatives: frozenset[str] = frozenset()
    """Items of the user's negative events (settings.events): never recommended to them,
    and not in ``events``, the model's input."""
    fresh_until: float = math.inf
    """time.monotonic() past which the entry is revalidated."""


@dataclass
class _Loading:
    appended: list[Entry] = field(default_factory=list)
    task: asyncio.Future[tuple[list[str], int]] | None = None
    expired: _Cached | None = None
    """The entry whose time to live ran out, revalidated before a full read."""
    stale: bool = False
    """Another replica stored events for the user while the read was in flight."""


def expiry(ttl_s: float) -> Callable[[str, object, float], float]:
    """A TLRUCache time-to-use: ``ttl_s`` x a factor in [0.5, 1) fixed by the key's hash."""

    def ttu(key: str, _value: object, now: float) -> float:
        spread = zlib.crc32(key.encode()) / 2**32
        return now + ttl_s * (0.5 + 0.5 * spread)

    return ttu


class HistoryCache:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        *,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        negative: Callable[[str, float], bool] | None = None,
    ) -> None:
        self._engine = engine
        self._negative = negative
        """Whether an event (kind, value) is negative; None: every event is positive."""
        self._clock = clock
        """Seconds on a monotonic clock (injectable, so that tests move time on)."""
        self._executor = executor
        self._max_bytes = max_bytes
        # Least recently used out first; entries older than their time to live are
        # revalidated (module docstring). Appends keep an entry's age. Each user's time to
        # live lies between ttl_s / 2 and ttl_s, fixed by a hash of the id: users warmed
        # together then do not all expire in the same instant (a burst of database reads
        # and re-encodings at once).
        self._cache: LRUCache[str, _Cached] = LRUCache(
            max(1, max_bytes), getsizeof=lambda cached: cached.nbytes
        )
        self._ttu = expiry(ttl_s) if ttl_s else None
        self._loading: dict[str, _Loading] = {}

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def nbytes(self) -> int:
        """The cached histories' measured size."""
        return int(self._cache.currsize)

    def _fresh(self, user_id: str) -> _Cached | None:
        cached = self._cache.get(user_id)
        if cached is None or self._clock() > cached.fresh_until:
            return None
        return cached

    async def get(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first (at most HISTORY_KEEP)."""
        items, _ = await self.get_versioned(user_id)
        return items

    async def get_versioned(self, user_id: str) -> tuple[list[str], int]:
        """The user's item ids and a version that changes whenever they change (0 when the
        history is not cached, so it must not be used as a cache key)."""
        cached = self._cache.get(user_id)
        if cached is not None and self._clock() <= cached.fresh_until:
            metrics.HISTORY_HIT.inc()
            return [item for _, item in cached.events], cached.version
        metrics.HISTORY_MISS.inc()
        loading = self._loading.get(user_id)
        if loading is None:
            # One database read per user at a time; concurrent callers share its result.
            # It runs as its own task, so a caller that goes away does not cancel it.
            loading = _Loading(expired=cached)
            self._loading[user_id] = loading
            loading.task = asyncio.ensure_future(self._load(user_id, loading))
        assert loading.task is not None
        return await asyncio.shield(loading.task)

    async def _load(self, user_id: str, loading: _Loading) -> tuple[list[str], int]:
        try:
            loop = asyncio.get_running_loop()
            expired = loading.expired
            if expired is not None:
                try:
                    stored = await loop.run_in_executor(self._executor, self._count, user_id)
                    unchanged = (
                        stored == expired.stored
                        and self._cache.get(user_id) is expired
                        and not loading.stale
                        and not loading.appended
                    )
                    if unchanged:
                        expired.fresh_until = self._fresh_until(user_id)
                except DatabaseUnavailable:
                    unchanged = True  # served as it is; revalidated on a later call
                if unchanged:
                    return [item for _, item in expired.events], expired.version
            events, negatives, stored = await loop.run_in_executor(
                self._executor, self._read, user_id
            )
            for _ in range(3):  # a read that began before another replica's commit
                if not loading.stale:
                    break
                loading.stale = False
                events, negatives, stored = await loop.run_in_executor(
                    self._executor, self._read, user_id
                )
        finally:
            self._loading.pop(user_id, None)
        for entry in loading.appended:  # committed while the read was in flight
            if entry not in events:
                bisect.insort(events, entry)
                stored += 1
        events = events[-HISTORY_KEEP:]
        version = self._store(user_id, events, stored, frozenset(negatives))
        return [item for _, item in events], version

    def cached_version(self, user_id: str) -> int:
        """The version of the user's cached, fresh history without copying it; 0 when
        it is not cached (or stale), so the caller must use get_versioned."""
        cached = self._fresh(user_id)
        if cached is None:
            return 0  # the get_versioned that follows counts the miss
        metrics.HISTORY_HIT.inc()
        return cached.version

    def peek(self, user_id: str) -> tuple[list[str], int] | None:
        """The cached, fresh history and its version, or None; never reads the database
        and counts neither a hit nor a miss (for background work, not requests)."""
        found = self.peek_events(user_id)
        if found is None:
            return None
        return [item for _, item in found[0]], found[1]

    def peek_events(self, user_id: str) -> tuple[tuple[Entry, ...], int] | None:
        """As ``peek``, but the cached (time, item) tuple as it is (nothing copied: it is
        never changed in place), for work that reads it off the event loop."""
        cached = self._fresh(user_id)
        return None if cached is None else (cached.events, cached.version)

    def invalidate(self, user_ids: list[str]) -> None:
        """Drops the users' cached histories (events stored through another replica); a
        read in flight for one of them reads again."""
        for user_id in user_ids:
            self._cache.pop(user_id, None)
            loading = self._loading.get(user_id)
            if loading is not None:
                loading.stale = True

    def clear(self) -> None:
        self._cache.clear()
        for loading in self._loading.values():
            loading.stale = True

    def is_cached(self, user_id: str) -> bool:
        return self._fresh(user_id) is not None

    def negatives(self, user_id: str) -> frozenset[str]:
        """Items of the user's negative events, from the cached history (empty when it is
        not cached: a request reads the history first)."""
        cached = self._fresh(user_id)
        return frozenset() if cached is None else cached.negatives

    def append(
        self, user_id: str, item_id: str, event_time: float, *, negative: bool = False
    ) -> None:
        """Records a committed event for the user (no database access)."""
        if negative:
            self._append_negative(user_id, item_id)
            return
        entry = (event_time, item_id)
        loading = self._loading.get(user_id)
        if loading is not None:
            loading.appended.append(entry)
        cached = self._cache.get(user_id)
        if cached is None:
            return
        events = cached.events
        if not events or entry >= events[-1]:
            grown = (*events, entry)
        else:
            merged = list(events)
            bisect.insort(merged, entry)
            grown = tuple(merged)
        dropped = grown[: max(0, len(grown) - HISTORY_KEEP)]
        events = grown[len(dropped) :]
        cached.nbytes += (
            event_bytes(entry)
            - sum(map(event_bytes, dropped))
            + sys.getsizeof(events)
            - sys.getsizeof(cached.events)
        )
        cached.events = events
        cached.version = next(_versions)
        cached.stored += 1
        if cached.nbytes <= self._max_bytes:
            self._cache[user_id] = cached  # its new weight (and most recently used)
        else:
            self._cache.pop(user_id, None)

    def _append_negative(self, user_id: str, item_id: str) -> None:
        """A committed negative event: the item joins the user's negatives (a read in
        flight reads again, so that it sees it)."""
        loading = self._loading.get(user_id)
        if loading is not None:
            loading.stale = True
        cached = self._cache.get(user_id)
        if cached is None:
            return
        grown = cached.negatives | {item_id}
        cached.nbytes += negatives_bytes(grown) - negatives_bytes(cached.negatives)
        cached.negatives = grown
        cached.version = next(_versions)
        cached.stored += 1
        if cached.nbytes <= self._max_bytes:
            self._cache[user_id] = cached
        else:
            self._cache.pop(user_id, None)

    def _store(
        self,
        user_id: str,
        events: list[Entry],
        stored: int = 0,
        negatives: frozenset[str] = frozenset(),
    ) -> int:
        if self._max_bytes == 0:
            return 0
        kept = tuple(events)
        entry = _Cached(
            kept,
            stored=stored,
            negatives=negatives,
            fresh_until=self._fresh_until(user_id),
            nbytes=history_bytes(user_id, kept) + negatives_bytes(negatives),
        )
        if entry.nbytes <= self._max_bytes:  # a budget below one history caches nothing
            self._cache[user_id] = entry
        return entry.version

    def _fresh_until(self, user_id: str) -> float:
        return math.inf if self._ttu is None else self._ttu(user_id, None, self._clock())

    def _read(self, user_id: str) -> tuple[list[Entry], set[str], int]:
        """The newest positive events, the items of the negative ones among the newest,
        and how many events the user has stored, in one transaction. Raises
        DatabaseUnavailable when the database cannot be reached."""
        with unavailable_on_db_error(), session_scope(self._engine) as session:
            events, negatives, read = event_store.recent_history_split(
                session, user_id=user_id, limit=HISTORY_KEEP, negative=self._negative
            )
            if read < HISTORY_KEEP:  # every event the user has: nothing to count
                return events, negatives, read
            return events, negatives, event_store.count_user_events(session, user_id=user_id)

    def _count(self, user_id: str) -> int:
        with unavailable_on_db_error(), session_scope(self._engine) as session:
            return event_store.count_user_events(session, user_id=user_id)
