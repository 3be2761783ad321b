"""The model the server is serving, and hot swaps to newly activated versions.

The registry polls the database for the active version. A new version's bundle is
verified and loaded off the event loop; only when it is ready does it replace the
current one, so requests never see a half-loaded model. A bundle that fails to load
is logged and skipped (retried after a minute), and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from server.backends.base import Backend
from server.batcher import DynamicBatcher
from shared import bundle as bundle_format
from shared import crud
from shared.config import ServerSettings
from shared.db import session_scope

log = logging.getLogger(__name__)
RETRY_FAILED_S = 60.0
POPULARITY_ITEMS = 1000

BackendFactory = Callable[[ServerSettings, bundle_format.Bundle], Backend]


@dataclass
class ServingModel:
    """A loaded bundle with its backend and a batcher that returns user states [D]."""

    version: int
    bundle: bundle_format.Bundle
    backend: Backend
    batcher: DynamicBatcher
    rows: dict[str, int]
    popularity: np.ndarray  # float32 [N+1], share of training events; row 0 = -inf
    unavailable_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class Fallback:
    """Popularity from the database, for when no model is loaded yet."""

    items: list[tuple[str, float]]


def trim_heap() -> bool:
    """Hands freed heap pages back to the OS (glibc's malloc_trim) after a model is
    retired, so that many hot swaps do not ratchet RSS up through allocator
    fragmentation. Returns False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.malloc_trim(0)
    return True


class ModelRegistry:
    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        executor: Executor,
        backend_factory: BackendFactory,
        *,
        on_batch: Callable[[int], None] | None = None,
        on_change: Callable[[ServingModel | None], None] | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._executor = executor
        self._factory = backend_factory
        self._on_batch = on_batch
        self._on_change = on_change
        self.current: ServingModel | None = None
        self.fallback: Fallback | None = None
        self.unavailable: set[str] = set()
        self._failed: dict[int, float] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def record_batch(self, size: int) -> None:
        """Counts a model run made outside the batcher (the naive benchmark mode)."""
        if self._on_batch is not None:
            self._on_batch(size)

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="model-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.current is not None:
            await self.current.batcher.close()
            self.current.backend.close()

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
            active, unavailable, fallback = await loop.run_in_executor(
                self._executor, self._read_state, self.current is None
            )
            self.unavailable = unavailable
            if fallback is not None:
                self.fallback = fallback
            if active is None:
                return
            version, path = active
            current = self.current
            if current is not None and current.version == version:
                current.unavailable_rows = self._unavailable_rows(current.rows)
                return
            if time.monotonic() - self._failed.get(version, -RETRY_FAILED_S) < RETRY_FAILED_S:
                return
            try:
                loaded = await loop.run_in_executor(self._executor, self._load, version, path)
            except Exception as exc:
                self._failed[version] = time.monotonic()
                log.error("cannot serve model version %s from %s: %s", version, path, exc)
                return
            self.current = loaded
            log.info(
                "serving model version %s (%s on %s)",
                version,
                loaded.backend.name,
                loaded.backend.device,
            )
            if self._on_change is not None:
                self._on_change(loaded)
            if current is not None:
                asyncio.create_task(self._retire(current))

    async def _retire(self, old: ServingModel) -> None:
        await old.batcher.close()  # in-flight requests of the old model finish first
        old.backend.close()
        del old
        await asyncio.get_running_loop().run_in_executor(self._executor, trim_heap)

    def _read_state(
        self, want_fallback: bool
    ) -> tuple[tuple[int, Path] | None, set[str], Fallback | None]:
        with session_scope(self._engine) as session:
            active = crud.get_active_model(session)
            unavailable = crud.unavailable_items(session)
            fallback = None
            if want_fallback:
                counts = crud.item_popularity(session, limit=POPULARITY_ITEMS)
                total = float(sum(n for _, n in counts)) or 1.0
                fallback = Fallback([(item, n / total) for item, n in counts]) if counts else None
        found = (int(active.version or 0), Path(active.artifact_path)) if active else None
        return found, unavailable, fallback

    def _load(self, version: int, path: Path) -> ServingModel:
        loaded = bundle_format.load(path)
        backend = self._factory(self._settings, loaded)
        # Warm up so the first request does not pay for graph initialisation.
        backend.encode(np.ones((1, 1), dtype=np.int64))
        batcher = DynamicBatcher(
            backend.encode,
            self._executor,
            max_batch=self._settings.max_batch_size,
            max_wait_s=self._settings.max_batch_wait_ms / 1000.0,
            max_inflight=inflight_batches(self._settings, backend.device),
            on_batch=self._on_batch,
        )
        total = float(loaded.popularity.sum()) or 1.0
        popularity = (loaded.popularity / total).astype(np.float32)
        popularity[0] = -np.inf
        rows = loaded.row_of()
        return ServingModel(
            version, loaded, backend, batcher, rows, popularity, self._unavailable_rows(rows)
        )

    def _unavailable_rows(self, rows: dict[str, int]) -> np.ndarray:
        return np.array([rows[i] for i in self.unavailable if i in rows], dtype=np.int64)


def inflight_batches(settings: ServerSettings, device: str) -> int:
    """settings.max_inflight_batches, or when it is 0 (auto): on the CPU, as many runs of
    intra_op_threads threads as fill this process's share of the cores; on a GPU, 1."""
    if settings.max_inflight_batches:
        return settings.max_inflight_batches
    if device != "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) // (settings.run_threads * settings.workers))
