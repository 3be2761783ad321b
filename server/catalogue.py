"""Item titles for responses that ask for them (Recommend's include_titles, the console's
preview), read from the catalogue table through a bounded TTL cache."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor

from cachetools import TTLCache
from sqlalchemy.engine import Engine

from shared import crud
from shared.db import session_scope, unavailable_on_db_error

TITLE_CACHE_ITEMS = 100_000
TITLE_TTL_S = 60.0
"""A renamed item shows its new title within this time."""


class Catalogue:
    def __init__(self, engine: Engine, executor: Executor) -> None:
        self._engine = engine
        self._executor = executor
        self._titles: TTLCache[str, str] = TTLCache(TITLE_CACHE_ITEMS, TITLE_TTL_S)

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
            return crud.item_titles(session, item_ids=item_ids)

    def forget(self) -> None:
        self._titles.clear()
