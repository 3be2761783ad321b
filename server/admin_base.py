"""What every part of the operator API shares: the components it works on, database
calls in the executor, and input checks whose errors name the field."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.catalogue import Catalogue
from server.deployment import Deployment
from server.guard import CallSlots
from server.history import HistoryCache
from server.pipeline.rules import RuleBook
from server.registry import ModelRegistry
from server.state_cache import StateCache
from server.stats import ServerStats
from shared.config import Settings
from shared.storage.engine import session_scope, unavailable_on_db_error
from shared.wire.errors import InvalidArgument

T = TypeVar("T")


MAX_LIMIT = 1000


def check_limit(field: str, value: int, default: int) -> int:
    """A list limit: 0 means ``default``; 1..MAX_LIMIT."""
    if value < 0 or value > MAX_LIMIT:
        raise InvalidArgument(field, f"is {value}; accepted: 1..{MAX_LIMIT} (0 means {default})")
    return value or default


def check_size(field: str, size: int, limit: int, noun: str) -> None:
    """A list field of 1..limit entries."""
    if not size:
        raise InvalidArgument(field, f"is empty; accepted: 1..{limit} {noun}")
    if size > limit:
        raise InvalidArgument(field, f"has {size} entries; at most {limit} are accepted")


def check_positive(field: str, value: int) -> int:
    if value < 1:
        raise InvalidArgument(field, f"is {value}; accepted: an id >= 1")
    return value


class AdminBase:
    """The components the operator API works on, and how it reaches the database."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        executor: Executor,
        registry: ModelRegistry,
        history: HistoryCache,
        states: StateCache,
        catalogue: Catalogue,
        stats: ServerStats,
        deployment: Deployment,
        slots: CallSlots,
        rules: RuleBook,
        forget_user: Callable[[str], None],
    ) -> None:
        self.rules = rules
        self.forget_user = forget_user
        self.settings = settings
        self.engine = engine
        self.executor = executor
        self.registry = registry
        self.history = history
        self.states = states
        self.catalogue = catalogue
        self.stats = stats
        self.deployment = deployment
        self.slots = slots

    async def _db(self, call: Callable[[Session], T]) -> T:
        def run() -> T:
            with unavailable_on_db_error(), session_scope(self.engine) as session:
                return call(session)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with unavailable_on_db_error():
                return call(*args)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)
