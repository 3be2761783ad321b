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
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from sqlalchemy.engine import Engine

from server import metrics
from server.backends.base import Backend
from server.batcher import DynamicBatcher
from server.memory import trim_heap
from shared.config import ServerSettings, Settings
from shared.model import bundle as bundle_format
from shared.model.ann import ItemIndex
from shared.model.rerank import log_share
from shared.storage import event_store, experiment_store, item_store, model_store
from shared.storage.engine import session_scope
from shared.storage.tables import ModelVersion
from shared.wire.errors import BundleError, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_FAILED_S = 60.0
POPULARITY_ITEMS = 1000

BackendFactory = Callable[[ServerSettings, bundle_format.Bundle], Backend]


class Encoded(NamedTuple):
    """One history's share of a model run."""

    state: np.ndarray
    """float32 [D], the user state."""
    scores: np.ndarray | None
    """float32 [N+1], state @ item_embeddings.T, computed with the batch; None for
    catalogues above BATCH_SCORING_MAX_ITEMS (then scored per request)."""


BATCH_SCORING_MAX_ITEMS = 200_000
"""Above this many items a batch's score matrix ([B, N+1] floats) gets too large."""


@dataclass(frozen=True)
class BatchOutput:
    states: np.ndarray  # float32 [B, D]
    scores: np.ndarray | None  # float32 [B, N+1]

    def __getitem__(self, i: int) -> Encoded:
        return Encoded(self.states[i], None if self.scores is None else self.scores[i])


def encode_and_score(
    backend: Backend, item_embeddings: np.ndarray, *, score: bool = True
) -> Callable[[np.ndarray], BatchOutput]:
    """The batcher's run: the backend's states, then every item's score for the whole
    batch in one matrix product, in the model's thread (BLAS releases the GIL), so the
    event loop only masks and picks the top k. A backend that computes the scores where
    the model runs (TensorRT, torch on CUDA) gives them with its states, and they are not
    computed again. ``score`` False (a model ranked through its item index): states only."""
    table = np.ascontiguousarray(item_embeddings.T)  # [D, N+1]
    score = score and table.shape[1] <= BATCH_SCORING_MAX_ITEMS

    def run(histories: np.ndarray) -> BatchOutput:
        if score and backend.computes_scores:  # computed where the model ran: not again here
            return BatchOutput(*backend.encode_with_scores(histories))
        states = backend.encode(histories)
        if not score:
            return BatchOutput(states, None)
        if len(states) == 1:  # a lone request: a matrix-vector product, one BLAS thread
            return BatchOutput(states, (item_embeddings @ states[0])[None])
        return BatchOutput(states, states @ table)

    return run


@dataclass
class ServingModel:
    """A loaded bundle with its backend and a batcher whose runs give Encoded rows."""

    version: int
    bundle: bundle_format.Bundle
    backend: Backend
    batcher: DynamicBatcher
    rows: dict[str, int]
    popularity: np.ndarray  # float32 [N+1], share of training events; row 0 = -inf
    unavailable_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    index: ItemIndex | None = None
    """The bundle's approximate top-k index, when it has one and the server uses it."""
    log_share: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """float32 [N+1], log of each item's share of training events (popularity debiasing)."""


@dataclass
class Fallback:
    """Popularity from the database, for when no model is loaded yet."""

    items: list[tuple[str, float]]


@dataclass(frozen=True)
class _Candidate:
    version: int
    path: Path
    checksum: str


@dataclass
class _State:
    """What a poll reads from the database."""

    active: _Candidate | None
    unavailable: set[str]
    fallback: Fallback | None
    arms: list[tuple[_Candidate, float, bool]] = field(default_factory=list)
    """The traffic split: (version, weight, is the shadow)."""


@dataclass(frozen=True)
class Arm:
    """A version serving a share of users (or, as the shadow, also ranking a share of
    requests)."""

    version: int
    weight: float
    model: ServingModel

    @property
    def name(self) -> str:
        return arm_name(self.version)


def arm_name(version: int) -> str:
    """How impressions and online metrics name the arm that serves ``version``."""
    return f"v{version}"


def user_bucket(user_id: str) -> float:
    """A user's fixed place in [0, 1): a hash of the id, the same on every replica."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, person=b"recserve-ab").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_arm(arms: Sequence[Arm], user_id: str) -> Arm:
    """The arm a user belongs to: arms own consecutive slices of [0, 1) sized by their
    normalised weights, in the order given."""
    total = sum(arm.weight for arm in arms)
    point = user_bucket(user_id) * total
    for arm in arms:
        point -= arm.weight
        if point < 0:
            return arm
    return arms[-1]


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
        self._model_executor = model_executor
        self._factory = backend_factory
        self._on_batch = on_batch
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
        self._failed: dict[int, tuple[float, str]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

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
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
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
        model = await self._load_once(self._candidate(row))
        self._extra[version] = model
        return model

    async def _apply_split(self, arms: list[tuple[_Candidate, float, bool]]) -> None:
        """Loads the split's versions (a version that does not load is left out, and its
        users go to the active version) and retires loaded versions it no longer names."""
        serving: list[Arm] = []
        shadow: Arm | None = None
        for candidate, weight, is_shadow in arms:
            model = self.loaded(candidate.version)
            if model is None:
                try:
                    model = await self._load_once(candidate)
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
                self._start_retiring(model)

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
            state = await loop.run_in_executor(self._executor, self._read_state)
            await self._refresh_active(state)
            await self._apply_split(state.arms)
            for model in self._extra.values():
                model.unavailable_rows = self._unavailable_rows(model.rows)

    async def _refresh_active(self, state: _State) -> None:
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
                current.unavailable_rows = self._unavailable_rows(current.rows)
            return
        if current is not None and current.version == active.version:
            current.unavailable_rows = self._unavailable_rows(current.rows)
            self.note = ""
            return
        try:
            loaded = self._extra.pop(active.version, None) or await self._load_once(active)
        except BundleError as exc:
            self.note = f"active version {active.version} cannot be served here: {exc}"
            if current is None:
                await self._serve_newest_good(active.version)
            elif current is not None:
                current.unavailable_rows = self._unavailable_rows(current.rows)
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
            candidate = _Candidate(version, self._root.bundle_path(row.artifact_path), row.checksum)
            try:
                loaded = self._extra.get(version) or await in_background(self._load, candidate)
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
        self._failed.pop(version, None)
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

    async def _load_once(self, candidate: _Candidate) -> ServingModel:
        """Loads a candidate; a version that failed within RETRY_FAILED_S fails again
        without another attempt (the reason is kept)."""
        failed = self._failed.get(candidate.version)
        if failed is not None and time.monotonic() - failed[0] < RETRY_FAILED_S:
            raise BundleError(failed[1])
        try:
            return await in_background(self._load, candidate)
        except BundleError as exc:
            self._failed[candidate.version] = (time.monotonic(), str(exc))
            log.error("cannot serve model version %s: %s", candidate.version, exc)
            raise

    async def _serve_newest_good(self, broken: int) -> None:
        """With nothing served and the active version broken: the newest version that loads,
        else the popularity fallback."""
        loop = asyncio.get_running_loop()
        candidates = await loop.run_in_executor(self._executor, self._servable)
        for candidate in candidates:
            if candidate.version == broken:
                continue
            try:
                loaded = await self._load_once(candidate)
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
                self._start_retiring(current)

    def _start_retiring(self, model: ServingModel) -> None:
        task = asyncio.create_task(self._retire(model), name="retire-model")
        self._retiring.add(task)
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("retiring a model failed", exc_info=task.exception())

    async def _retire(self, old: ServingModel) -> None:
        await old.batcher.close()  # in-flight requests of the old model finish first
        old.backend.close()
        del old
        # At normal priority: the trim holds the heap's lock, and a niced thread holding
        # it would stall every allocating thread for as long as it waits for a core.
        await asyncio.to_thread(trim_heap)

    def _read_state(self) -> _State:
        with session_scope(self._engine) as session:
            active = model_store.get_active_model(session)
            unavailable = item_store.unavailable_items(session)
            fallback = None
            if self.current is None:
                counts = event_store.item_popularity(session, limit=POPULARITY_ITEMS)
                total = float(sum(n for _, n in counts)) or 1.0
                fallback = Fallback([(item, n / total) for item, n in counts]) if counts else None
            arms = []
            for arm in experiment_store.traffic_arms(session):
                try:
                    model = model_store.get_model_version(session, version=arm.version)
                except NotFound:
                    continue  # deleted since the split was set: its users go to the active
                arms.append((self._candidate(model), arm.weight, arm.shadow))
        return _State(self._candidate(active) if active else None, unavailable, fallback, arms)

    def _servable(self) -> list[_Candidate]:
        with session_scope(self._engine) as session:
            return [self._candidate(m) for m in model_store.servable_models(session)]

    def _candidate(self, model: ModelVersion) -> _Candidate:
        return _Candidate(
            int(model.version or 0), self._root.bundle_path(model.artifact_path), model.checksum
        )

    def _load(self, candidate: _Candidate) -> ServingModel:
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
            self._unavailable_rows(rows),
            index,
            log_share(loaded.popularity),
        )

    def _unavailable_rows(self, rows: dict[str, int]) -> np.ndarray:
        return np.array([rows[i] for i in self.unavailable if i in rows], dtype=np.int64)


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
