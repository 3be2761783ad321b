"""Loading a model version for serving: the bundle verified against its recorded checksum,
the backend and its batcher, the item index, and loading in the background at low CPU
priority so that a hot swap does not take the cores serving requests."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from server.backends.base import Backend
from server.batcher import DynamicBatcher
from server.served_model import Candidate, ServingModel, encode_and_score
from shared.config import ServerSettings, Settings
from shared.model import bundle as bundle_format
from shared.model.ann import ItemIndex
from shared.model.rerank import log_share
from shared.storage.tables import ModelVersion
from shared.wire.errors import BundleError

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_FAILED_S = 60.0


BackendFactory = Callable[[ServerSettings, bundle_format.Bundle], Backend]


def load_item_index(directory: Path) -> ItemIndex | None:
    """The bundle's item index, or None when it has none or faiss is not installed (then
    every item is scored, as for a small catalogue)."""
    try:
        return ItemIndex.load(directory)
    except ImportError:
        log.warning(
            "bundle %s carries an item index but faiss is not installed "
            "(pip install 'recserve[server]'): scoring every item instead",
            directory,
        )
        return None


BACKGROUND_NICENESS = 10


async def in_background(work: Callable[..., T], *args: Any) -> T:
    """Runs ``work`` on a thread of its own at a lower CPU priority (niceness +10, Linux),
    for a hot swap's loading and clean-up: on a busy machine they then take the cores the
    event loop and the model runs leave idle, instead of slowing every request down. The
    thread ends with the work, so its priority never leaks into a pooled thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
            pass
        try:
            result = work(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=run, name="recserve-background", daemon=True).start()
    return await future


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def check_output_widths(loaded: bundle_format.Bundle, backend: Backend, state: np.ndarray) -> None:
    """The model's outputs must fit its item map: a user state as wide as the scoring
    table's rows, and (where the backend can tell) one score per item row."""
    rows, width = loaded.item_embeddings.shape
    if state.ndim != 2 or state.shape[1] != width:
        raise BundleError(
            f"bundle {loaded.path}: the model returns states of shape {state.shape}, "
            f"but item_embeddings.npy has width {width}"
        )
    scores = backend.scores_width()
    if scores is not None and scores != rows:
        raise BundleError(
            f"bundle {loaded.path}: the model scores {scores} item rows, but its item map "
            f"has {rows} (vocab.json: {len(loaded.vocab)} items + padding)"
        )


def inflight_batches(settings: ServerSettings, device: str) -> int:
    """settings.max_inflight_batches, or when it is 0 (auto): on the CPU, as many runs of
    intra_op_threads threads as fill this process's share of the cores; on a GPU, 1."""
    if settings.max_inflight_batches:
        return settings.max_inflight_batches
    if device != "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) // (settings.run_threads * settings.workers))


class ModelLoader:
    """Loads model versions for serving: verifies a bundle against the checksum recorded
    at registration, builds its backend and batcher, and remembers recent failures so a
    broken version is not retried on every poll."""

    def __init__(
        self,
        settings: Settings,
        model_executor: Executor,
        backend_factory: BackendFactory,
        *,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._root = settings
        self._settings = settings.server
        self._model_executor = model_executor
        self._factory = backend_factory
        self._on_batch = on_batch
        self._failed: dict[int, tuple[float, str]] = {}

    def candidate(self, model: ModelVersion) -> Candidate:
        return Candidate(
            int(model.version or 0), self._root.bundle_path(model.artifact_path), model.checksum
        )

    def forget_failure(self, version: int) -> None:
        self._failed.pop(version, None)

    async def load_now(self, candidate: Candidate, unavailable: set[str]) -> ServingModel:
        """Loads ``candidate`` on a background thread, whatever failed before."""
        return await in_background(self.load, candidate, unavailable)

    async def load_once(self, candidate: Candidate, unavailable: set[str]) -> ServingModel:
        """Loads a candidate; a version that failed within RETRY_FAILED_S fails again
        without another attempt (the reason is kept)."""
        failed = self._failed.get(candidate.version)
        if failed is not None and time.monotonic() - failed[0] < RETRY_FAILED_S:
            raise BundleError(failed[1])
        try:
            return await in_background(self.load, candidate, unavailable)
        except BundleError as exc:
            self._failed[candidate.version] = (time.monotonic(), str(exc))
            log.error("cannot serve model version %s: %s", candidate.version, exc)
            raise

    def load(self, candidate: Candidate, unavailable: set[str]) -> ServingModel:
        """Verifies, loads and checks a bundle (in the executor). Raises BundleError."""
        loaded = bundle_format.load(candidate.path)
        if candidate.checksum and loaded.checksum != candidate.checksum:
            raise BundleError(
                f"bundle {candidate.path}: its checksums.json is not the one recorded when "
                "the version was registered (the bundle was replaced or altered)"
            )
        try:
            backend = self._factory(self._settings, loaded)
            # Warm up so the first request does not pay for graph initialisation.
            state = backend.encode(np.ones((1, 1), dtype=np.int64))
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"bundle {candidate.path}: the model does not load: {exc}") from exc
        check_output_widths(loaded, backend, state)
        index = load_item_index(loaded.path) if self._settings.use_item_index else None
        batcher = DynamicBatcher(
            encode_and_score(backend, loaded.item_embeddings, score=index is None),
            self._model_executor,
            max_batch=self._settings.max_batch_size,
            max_run_s=self._settings.max_batch_run_ms / 1000.0,
            max_wait_s=self._settings.max_batch_wait_ms / 1000.0,
            max_inflight=inflight_batches(self._settings, backend.device),
            lone_runs=self._settings.lone_runs if backend.device == "cpu" else 0,
            max_queue_wait_s=self._settings.max_queue_wait_ms / 1000.0,
            max_queued=self._settings.max_queued_histories
            or 4 * self._settings.max_batch_size * inflight_batches(self._settings, backend.device),
            on_batch=self._on_batch,
        )
        total = float(loaded.popularity.sum()) or 1.0
        popularity = (loaded.popularity / total).astype(np.float32)
        popularity[0] = -np.inf
        rows = loaded.row_of()
        return ServingModel(
            candidate.version,
            loaded,
            backend,
            batcher,
            rows,
            popularity,
            unavailable_rows(unavailable, rows),
            index,
            log_share(loaded.popularity),
        )


def unavailable_rows(unavailable: set[str], rows: dict[str, int]) -> np.ndarray:
    """The item-table rows of the unavailable items that the model knows."""
    return np.array([rows[i] for i in unavailable if i in rows], dtype=np.int64)
