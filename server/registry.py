"""The model the server is serving, activation, and hot swaps to newly activated versions.

The registry polls the database for the active version. A bundle is verified and loaded
off the event loop (its checksums against the ones recorded at registration, the files
themselves, the backend's output widths against the item map); only a model that passed
replaces the current one, so requests never see a half-loaded model.

- ActivateModel goes through ``activate``: the bundle is loaded and checked *before* the
  database names it active, so the database's active version is always one that can be
  served. A bundle that fails is refused with BundleError (FAILED_PRECONDITION) and the
  previous model keeps serving.
- A bundle that fails to load on a poll (a replica whose copy is broken, or a server
  starting with a broken active bundle) is retried after a minute. Meanwhile the server
  keeps its current model, or, with none, serves the newest version that does load, or
  the popularity fallback; ``note`` says so (GetServerStats, the console).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

from sqlalchemy.engine import Engine

from server import metrics
from server.arms import Arm, pick_arm, with_model
from server.model_loader import (
    BackendFactory,
    ModelLoader,
    unavailable_rows,
)
from server.registry_state import RegistryState, Retirements, read_state
from server.served_model import Candidate, Fallback, ServingModel
from shared.config import Settings
from shared.storage import model_store
from shared.storage.engine import session_scope
from shared.storage.tables import ModelVersion
from shared.wire.errors import BundleError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        executor: Executor,
        model_executor: Executor,
        backend_factory: BackendFactory,
        *,
        on_batch: Callable[[int, float], None] | None = None,
        on_change: Callable[[ServingModel | None], None] | None = None,
        before_swap: Callable[[ServingModel, ServingModel | None], Awaitable[int]] | None = None,
    ) -> None:
        self._root = settings
        self._settings = settings.server
        self._engine = engine
        self._executor = executor
        self._on_batch = on_batch
        self._loader = ModelLoader(settings, model_executor, backend_factory, on_batch=on_batch)
        self._on_change = on_change
        self.current: ServingModel | None = None
        self.arms: list[Arm] = []
        """The traffic split being applied (empty: ``current`` serves everyone)."""
        self.shadow: Arm | None = None
        """The shadow candidate; its weight is the share of requests it also ranks."""
        self._extra: dict[int, ServingModel] = {}
        """Loaded arm and shadow versions other than ``current``."""
        self._before_swap = before_swap
        """Called with an incoming model and the one it replaces just before the swap (the
        server pre-encodes recent users' states with it); the swap follows without
        yielding to the event loop. A failure is logged and the swap goes ahead."""
        self.fallback: Fallback | None = None
        self.unavailable: set[str] = set()
        self.configured_version = 0
        """The version the database names active (0: none)."""
        self.note = ""
        """Why the served version differs from configured_version, if it does."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring = Retirements()

    def record_batch(self, size: int, seconds: float) -> None:
        """Counts a model run made outside the batcher (a benchmark's naive baseline)."""
        if self._on_batch is not None:
            self._on_batch(size, seconds)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="model-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._retiring.wait()
        self.arms, self.shadow = [], None
        for model in [self.current, *self._extra.values()]:
            if model is not None:
                await model.batcher.close()
                model.backend.close()
        self._extra.clear()

    def model_for(self, user_id: str) -> tuple[ServingModel | None, str]:
        """The model that serves ``user_id`` and its arm's name ("" without a split)."""
        arms = self.arms
        if not arms:
            return self.current, ""
        arm = pick_arm(arms, user_id)
        return arm.model, arm.name

    async def extend(
        self, version: int, build: Callable[[ServingModel], Awaitable[ServingModel | None]]
    ) -> None:
        """Replaces loaded ``version`` by what ``build`` makes of it (None: leaves it),
        wherever it is referenced, under the lock that swaps and splits take."""
        async with self._lock:
            old = self.loaded(version)
            new = None if old is None else await build(old)
            if old is not None and new is not None:
                self.current = new if self.current is old else self.current
                self._extra = {v: new if m is old else m for v, m in self._extra.items()}
                self.arms, self.shadow = with_model(self.arms, self.shadow, old, new)

    def loaded(self, version: int) -> ServingModel | None:
        current = self.current
        if current is not None and current.version == version:
            return current
        return self._extra.get(version)

    async def load_version(self, version: int) -> ServingModel:
        """Loads ``version`` for a split or shadow (kept until the split drops it).
        Raises NotFound, FailedPrecondition or BundleError."""
        async with self._lock:
            return await self._load_version(version)

    async def _load_version(self, version: int) -> ServingModel:
        model = self.loaded(version)
        if model is not None:
            return model
        loop = asyncio.get_running_loop()
        row = await loop.run_in_executor(self._executor, self._model_row, version)
        if row.status != "active":
            model_store.check_activatable(row)
        model = await self._loader.load_once(self._loader.candidate(row), self.unavailable)
        self._extra[version] = model
        return model

    async def _apply_split(self, arms: list[tuple[Candidate, float, bool]]) -> None:
        """Loads the split's versions (a version that does not load is left out, and its
        users go to the active version) and retires loaded versions it no longer names."""
        serving: list[Arm] = []
        shadow: Arm | None = None
        for candidate, weight, is_shadow in arms:
            model = self.loaded(candidate.version)
            if model is None:
                try:
                    model = await self._loader.load_once(candidate, self.unavailable)
                except BundleError:
                    continue
                self._extra[candidate.version] = model
            arm = Arm(candidate.version, weight, model)
            if is_shadow:
                shadow = arm
            else:
                serving.append(arm)
        self.arms, self.shadow = serving, shadow
        named = {candidate.version for candidate, _, _ in arms}
        current = self.current.version if self.current else 0
        for version in [v for v in self._extra if v not in named or v == current]:
            model = self._extra.pop(version)
            if model is not self.current:
                self._retiring.start(model)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.model_poll_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("model refresh failed; keeping the current model")

    async def refresh(self) -> None:
        """Loads the active version if it differs from the one being served."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            state = await loop.run_in_executor(
                self._executor, read_state, self._engine, self._loader, self.current is None
            )
            await self._refresh_active(state)
            await self._apply_split(state.arms)
            for model in self._extra.values():
                model.unavailable_rows = unavailable_rows(self.unavailable, model.rows)

    async def _refresh_active(self, state: RegistryState) -> None:
        """Serves the version the database names active, if it is not served yet."""
        self.unavailable = state.unavailable
        if state.fallback is not None:
            self.fallback = state.fallback
        active = state.active
        self.configured_version = active.version if active else 0
        current = self.current
        if active is None:
            self.note = "" if current is None else "no version is active in the database"
            if current is not None:
                current.unavailable_rows = unavailable_rows(self.unavailable, current.rows)
            return
        if current is not None and current.version == active.version:
            current.unavailable_rows = unavailable_rows(self.unavailable, current.rows)
            self.note = ""
            return
        try:
            loaded = self._extra.pop(active.version, None) or await self._loader.load_once(
                active, self.unavailable
            )
        except BundleError as exc:
            self.note = f"active version {active.version} cannot be served here: {exc}"
            if current is None:
                await self._serve_newest_good(active.version)
            elif current is not None:
                current.unavailable_rows = unavailable_rows(self.unavailable, current.rows)
                self.note += f"; still serving version {current.version}"
            return
        self.note = ""
        await self._warm(loaded)
        self._swap(loaded)

    async def activate(self, version: int, reason: str) -> ModelVersion:
        """ActivateModel: verifies and loads ``version``, then records it as active in the
        database and serves it. Raises NotFound, FailedPrecondition or BundleError (the
        database and the served model are then unchanged)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            # Marked in the database first, so that no prune takes the bundle being loaded.
            row = await loop.run_in_executor(self._executor, self._begin, version)
            try:
                return await self._activate_row(row, version, reason)
            except BaseException:
                await loop.run_in_executor(self._executor, self._end, version)
                raise

    async def _activate_row(self, row: ModelVersion, version: int, reason: str) -> ModelVersion:
        """Loads ``row``'s bundle (unless it serves already), records the activation, and
        swaps it in; the database is written only once the bundle has loaded."""
        loop = asyncio.get_running_loop()
        current = self.current
        loaded: ServingModel | None = None
        in_split = version in self._extra  # an arm or the shadow: already loaded
        if current is None or current.version != version:
            candidate = self._loader.candidate(row)
            try:
                loaded = self._extra.get(version) or await self._loader.load_now(
                    candidate, self.unavailable
                )
            except BundleError as exc:
                message = f"model version {version} cannot be activated: {exc}"
                raise BundleError(message) from exc
        try:
            row = await loop.run_in_executor(self._executor, self._commit, version, reason)
        except BaseException:
            if loaded is not None and not in_split:
                await loaded.batcher.close()
                loaded.backend.close()
            raise
        self._extra.pop(version, None)
        self.configured_version, self.note = version, ""
        self._loader.forget_failure(version)
        if loaded is not None:
            await self._warm(loaded)
            self._swap(loaded)
        return row

    def _model_row(self, version: int) -> ModelVersion:
        with session_scope(self._engine) as session:
            return model_store.get_model_version(session, version=version)

    def _begin(self, version: int) -> ModelVersion:
        with session_scope(self._engine) as session:
            return model_store.begin_activation(session, version=version)

    def _end(self, version: int) -> None:
        with session_scope(self._engine) as session:
            model_store.end_activation(session, version=version)

    def _commit(self, version: int, reason: str) -> ModelVersion:
        with session_scope(self._engine) as session:
            return model_store.activate_model(session, version=version, reason=reason)

    async def _serve_newest_good(self, broken: int) -> None:
        """With nothing served and the active version broken: the newest version that loads,
        else the popularity fallback."""
        loop = asyncio.get_running_loop()
        candidates = await loop.run_in_executor(self._executor, self._servable)
        for candidate in candidates:
            if candidate.version == broken:
                continue
            try:
                loaded = await self._loader.load_once(candidate, self.unavailable)
            except BundleError:
                continue
            self.note += f"; serving version {candidate.version}, the newest that loads"
            self._swap(loaded)
            return
        self.note += "; serving the popularity fallback"

    async def _warm(self, loaded: ServingModel) -> None:
        if self._before_swap is None or self.current is None:
            return
        started = time.perf_counter()
        try:
            users = await self._before_swap(loaded, self.current)
        except Exception:
            log.exception("pre-encoding states for model version %s failed", loaded.version)
            return
        log.info(
            "model version %s: %d users' states encoded before the swap (%.2fs)",
            loaded.version,
            users,
            time.perf_counter() - started,
        )

    def _swap(self, loaded: ServingModel) -> None:
        current, self.current = self.current, loaded
        metrics.served(loaded.version, loaded.backend.name, loaded.backend.device)
        log.info(
            "serving model version %s (%s on %s)",
            loaded.version,
            loaded.backend.name,
            loaded.backend.device,
        )
        if self._on_change is not None:
            self._on_change(loaded)
        if current is not None and current.version not in self._extra:
            if any(arm.model is current for arm in [*self.arms, *filter(None, [self.shadow])]):
                self._extra[current.version] = current  # still an arm: kept
            else:
                self._retiring.start(current)

    def _servable(self) -> list[Candidate]:
        with session_scope(self._engine) as session:
            return [self._loader.candidate(m) for m in model_store.servable_models(session)]
