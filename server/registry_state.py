"""What the model registry reads from the database at each poll, and how it retires a
model that no longer serves."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from server.memory import trim_heap
from server.model_loader import ModelLoader
from server.served_model import Candidate, Fallback, ServingModel
from shared.storage import event_store, experiment_store, item_store, model_store
from shared.storage.engine import session_scope
from shared.wire.errors import NotFound

log = logging.getLogger(__name__)
POPULARITY_ITEMS = 1000
"""Items in the popularity fallback served before any model loads."""


@dataclass
class RegistryState:
    """What a poll reads from the database."""

    active: Candidate | None
    unavailable: set[str]
    fallback: Fallback | None
    arms: list[tuple[Candidate, float, bool]] = field(default_factory=list)
    """The traffic split: (version, weight, is the shadow)."""


def read_state(engine: Engine, loader: ModelLoader, with_fallback: bool) -> RegistryState:
    """The active version, unavailable items, the split and, ``with_fallback`` (nothing
    served yet), the popularity fallback."""
    with session_scope(engine) as session:
        active = model_store.get_active_model(session)
        unavailable = item_store.unavailable_items(session)
        fallback = None
        if with_fallback:
            counts = event_store.item_popularity(session, limit=POPULARITY_ITEMS)
            total = float(sum(n for _, n in counts)) or 1.0
            fallback = Fallback([(item, n / total) for item, n in counts]) if counts else None
        arms = []
        for arm in experiment_store.traffic_arms(session):
            try:
                model = model_store.get_model_version(session, version=arm.version)
            except NotFound:
                continue  # deleted since the split was set: its users go to the active
            arms.append((loader.candidate(model), arm.weight, arm.shadow))
    candidate = loader.candidate(active) if active else None
    return RegistryState(candidate, unavailable, fallback, arms)


class Retirements:
    """Models being retired: each closes its batcher (in-flight requests finish first)
    and backend on a task of its own, then returns freed memory to the system."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, model: ServingModel) -> None:
        task = asyncio.create_task(self._retire(model), name="retire-model")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("retiring a model failed", exc_info=task.exception())

    @staticmethod
    async def _retire(old: ServingModel) -> None:
        await old.batcher.close()  # in-flight requests of the old model finish first
        old.backend.close()
        del old
        # At normal priority: the trim holds the heap's lock, and a niced thread holding
        # it would stall every allocating thread for as long as it waits for a core.
        await asyncio.to_thread(trim_heap)
