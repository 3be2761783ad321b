"""The catalogue as the server uses it.

- Titles for responses that ask for them (Recommend's include_titles, explanations, the
  console's preview), read through a bounded TTL cache.
- Labels, for Recommend's include_labels / exclude_labels, and the items new to the
  served model, for the exploration slot: a snapshot of the catalogue table, reloaded
  when it changes (its entry count or newest updated_at moves; checked every poll),
  with an index from each label to its items. The model rows of a (version, label)
  are kept in an LRU of ``label_cache_max_entries`` and filled in the executor
  (``prepare_labels``) before a request ranks: clients choose the labels they send, so
  neither the memory nor the event loop's time may grow with them. A label no item
  carries costs one dictionary lookup.
  New items are ranked by their events in the last exploration_window_h (recent
  popularity, refreshed every EXPLORATION_REFRESH_S), the newest first among equals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from cachetools import LRUCache, TTLCache
from sqlalchemy.engine import Engine

from shared.storage import event_store, item_store
from shared.storage.engine import session_scope, unavailable_on_db_error
from shared.storage.tables import as_utc, utcnow

log = logging.getLogger(__name__)

TITLE_CACHE_ITEMS = 100_000
TITLE_TTL_S = 60.0
"""A renamed item shows its new title within this time."""
EXPLORATION_REFRESH_S = 30.0
"""How often the recent popularity of new items is read again."""


@dataclass
class Snapshot:
    """The catalogue's labels and entries at one moment."""

    stamp: tuple[int, datetime | None] = (0, None)
    labels: dict[str, frozenset[str]] = field(default_factory=dict)
    by_label: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each label's items."""
    entries: list[tuple[str, bool, float]] = field(default_factory=list)
    """(item_id, available, created at as epoch seconds)."""


class Catalogue:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        *,
        poll_s: float = 2.0,
        exploration_window_h: float = 24.0,
        label_cache_max_entries: int = 10_000,
    ) -> None:
        self._engine = engine
        self._executor = executor
        self._titles: TTLCache[str, str] = TTLCache(TITLE_CACHE_ITEMS, TITLE_TTL_S)
        self._poll_s = poll_s
        self._window = timedelta(hours=exploration_window_h)
        self.snapshot = Snapshot()
        self._rows: LRUCache[tuple[int, int, str], np.ndarray] = LRUCache(label_cache_max_entries)
        """Per (model version, its item rows, label): the model rows carrying the label
        (a model takes on rows as items are added after training, never loses any)."""
        self._new: dict[int, tuple[float, list[str]]] = {}
        """Per model version: (when ranked, new items best first)."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Loads the catalogue once (so that the first requests see its labels and
        availability, not an empty snapshot), then polls for changes."""
        try:
            await self.refresh()
        except Exception as exc:  # the poll retries; meanwhile no labels are known
            log.warning("catalogue not loaded at start: %s", exc)
        self._task = asyncio.create_task(self._poll(), name="catalogue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the last snapshot keeps serving
                log.warning("catalogue refresh failed: %s", exc)
            await asyncio.sleep(self._poll_s)

    async def refresh(self) -> None:
        """Reloads the snapshot if the catalogue changed."""
        loop = asyncio.get_running_loop()
        stamp = await loop.run_in_executor(self._executor, self._stamp)
        if stamp == self.snapshot.stamp:
            return
        self.snapshot = await loop.run_in_executor(self._executor, self._load, stamp)
        self._rows.clear()
        self._new.clear()
        self._titles.clear()

    def _stamp(self) -> tuple[int, datetime | None]:
        with session_scope(self._engine) as session:
            return item_store.catalogue_stamp(session)

    def _load(self, stamp: tuple[int, datetime | None]) -> Snapshot:
        with session_scope(self._engine) as session:
            entries = item_store.catalogue_entries(session)
        by_label: dict[str, list[str]] = {}
        for item, labels, _, _ in entries:
            for label in labels or ():
                by_label.setdefault(label, []).append(item)
        return Snapshot(
            stamp,
            {item: frozenset(labels) for item, labels, _, _ in entries if labels},
            {label: tuple(items) for label, items in by_label.items()},
            [
                (item, available, as_utc(c).timestamp() if c else 0.0)
                for item, _, available, c in entries
            ],
        )

    async def prepare_labels(
        self, version: int, rows: dict[str, int], labels: Sequence[str]
    ) -> None:
        """Computes, in the executor, the rows of the labels not cached yet, so that
        ranking finds them in the cache instead of on the event loop."""
        missing = [x for x in dict.fromkeys(labels) if (version, len(rows), x) not in self._rows]
        if not missing:
            return
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            self._executor, self._compute_rows, self.snapshot, rows, missing
        )
        for label, label_rows in found.items():
            self._rows[(version, len(rows), label)] = label_rows

    @staticmethod
    def _compute_rows(
        snapshot: Snapshot, rows: dict[str, int], labels: list[str]
    ) -> dict[str, np.ndarray]:
        return {
            label: np.array(
                sorted(rows[item] for item in snapshot.by_label.get(label, ()) if item in rows),
                dtype=np.int64,
            )
            for label in labels
        }

    def label_rows(self, version: int, rows: dict[str, int], label: str) -> np.ndarray:
        """int64 model rows of the items that carry ``label``: from the cache that
        ``prepare_labels`` filled (computed here only if evicted since, which takes more
        distinct labels during one request than the cache holds)."""
        key = (version, len(rows), label)
        found = self._rows.get(key)
        if found is None:
            found = self._compute_rows(self.snapshot, rows, [label])[label]
            self._rows[key] = found
        return found

    @property
    def cached_label_entries(self) -> int:
        return len(self._rows)

    def has_labels(self, item_id: str, include: frozenset[str], exclude: frozenset[str]) -> bool:
        """Whether an item passes the label filters."""
        labels = self.snapshot.labels.get(item_id, frozenset())
        return (not include or bool(labels & include)) and not labels & exclude

    async def new_items(self, version: int, rows: dict[str, int]) -> list[str]:
        """Available catalogue items the model ``version`` does not know, the most
        recently popular first (refreshed every EXPLORATION_REFRESH_S)."""
        ranked = self._new.get(version)
        if ranked is not None and time.monotonic() - ranked[0] < EXPLORATION_REFRESH_S:
            return ranked[1]
        new = [
            (item, created)
            for item, available, created in self.snapshot.entries
            if available and item not in rows
        ]
        counts: dict[str, int] = {}
        if new:
            loop = asyncio.get_running_loop()
            since = utcnow() - self._window
            counts = await loop.run_in_executor(
                self._executor, self._counts, [item for item, _ in new], since
            )
        order = sorted(new, key=lambda entry: (-counts.get(entry[0], 0), -entry[1], entry[0]))
        items = [item for item, _ in order]
        self._new[version] = (time.monotonic(), items)
        return items

    def _counts(self, item_ids: list[str], since: datetime) -> dict[str, int]:
        with session_scope(self._engine) as session:
            return event_store.recent_item_counts(session, item_ids=item_ids, since=since)

    async def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of the items ("" for items without a catalogue entry)."""
        missing = [i for i in dict.fromkeys(item_ids) if i not in self._titles]
        if missing:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(self._executor, self._read, missing)
            for item_id in missing:
                self._titles[item_id] = found.get(item_id, "")
        return {i: self._titles.get(i, "") for i in item_ids}

    def _read(self, item_ids: list[str]) -> dict[str, str]:
        with unavailable_on_db_error(), session_scope(self._engine) as session:
            return item_store.item_titles(session, item_ids=item_ids)

    def forget(self) -> None:
        self._titles.clear()
