"""The operator API as plain domain calls (ModelAdmin's data plane; no gRPC here).

ModelAdminServicer translates protobuf to these calls and back, as RecommenderServicer
does with the request pipeline. Database work runs in the executor; every input is
validated here, with errors that name the field.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.catalogue import Catalogue
from server.deployment import Deployment, ReplicaView
from server.guard import CallSlots
from server.history import HistoryCache
from server.pipeline.validate import MAX_ID_LEN, MAX_LABEL_LEN, check_epoch_ms, check_id
from server.registry import ModelRegistry
from server.state_cache import StateCache
from server.stats import Sample, ServerStats
from shared.config import Settings
from shared.model import bundle as bundle_format
from shared.model.params import TrainingOption, training_options
from shared.storage import event_store, experiment_store, item_store, job_store, model_store
from shared.storage.engine import session_scope, unavailable_on_db_error
from shared.storage.retention import PruneResult, prune
from shared.storage.tables import (
    Item,
    Job,
    ModelActivation,
    ModelVersion,
    OnlineMetric,
    TrafficArm,
    as_utc,
)
from shared.training.jobs import queue_engine_build, submit_training
from shared.wire.errors import BundleError, FailedPrecondition, InvalidArgument, NotFound

T = TypeVar("T")
MAX_LIMIT = 1000
MAX_AVAILABILITY_ITEMS = 10_000


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


@dataclass(frozen=True)
class BundleFileView:
    name: str
    size_bytes: int
    sha256: str
    ok: bool


@dataclass(frozen=True)
class ModelDetails:
    model: ModelVersion
    files: list[BundleFileView]
    problem: str
    activations: list[ModelActivation]


@dataclass(frozen=True)
class HistoryEventView:
    item_id: str
    title: str
    kind: str
    event_time: datetime


@dataclass(frozen=True)
class ItemView:
    item_id: str
    title: str
    labels: list[str]
    available: bool
    in_catalogue: bool
    created_at_ms: int = 0
    in_model: bool = True


@dataclass(frozen=True)
class StatsView:
    figures: dict[str, float]
    backend: str
    device: str
    serving_version: int
    configured_version: int
    note: str
    requests_total: int
    feedback_events_total: int
    cached_users: int
    history_cache_bytes: int
    label_cache_entries: int
    calls_in_progress: int
    streams_open: int
    batches_total: int
    batched_histories_total: int
    state_cache_hits: int
    replica_id: str
    series: list[Sample]
    replicas: list[ReplicaView]


DEFAULT_SHADOW_SHARE = 0.1
MAX_TITLE_LEN = 1024
MAX_ITEM_LABELS = 32


@dataclass
class ExperimentView:
    arms: list[tuple[int, float]]
    shadow_version: int
    shadow_share: float
    metrics: list[OnlineMetric]


class AdminService:
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
    ) -> None:
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

    # --- models --------------------------------------------------------------------------

    async def list_models(self, limit: int) -> tuple[list[ModelVersion], int]:
        limit = check_limit("limit", limit, 100)

        def read(session: Session) -> tuple[list[ModelVersion], int]:
            active = model_store.get_active_model(session)
            models = model_store.list_model_versions(session, limit=limit)
            return models, int(active.version or 0) if active else 0

        return await self._db(read)

    async def get_model(self, version: int) -> ModelVersion:
        version = check_positive("version", version)
        return await self._db(lambda s: model_store.get_model_version(s, version=version))

    async def model_details(self, version: int) -> ModelDetails:
        model = await self.get_model(version)
        activations = await self._db(
            lambda s: model_store.list_activations(s, limit=MAX_LIMIT, version=version)
        )
        files, problem = await self._run(self._inspect_bundle, model)
        return ModelDetails(model, files, problem, activations)

    def _inspect_bundle(self, model: ModelVersion) -> tuple[list[BundleFileView], str]:
        """Each file of the bundle against checksums.json, and the first problem found."""
        if not model.artifact_path:
            return [], "no bundle"
        directory = self.settings.bundle_path(model.artifact_path)
        try:
            recorded = bundle_format.read_checksums(directory)
        except BundleError as exc:
            return [], str(exc)
        files = []
        for name, expected in sorted(recorded.items()):
            path = directory / name
            exists = path.is_file()
            actual = bundle_format.sha256_file(path) if exists else ""
            size = path.stat().st_size if exists else 0
            files.append(BundleFileView(name, size, actual or expected, actual == expected))
        try:
            checksum = bundle_format.verify(directory)
        except BundleError as exc:
            return files, str(exc)
        if model.checksum and checksum != model.checksum:
            return files, "checksums.json differs from the one recorded at registration"
        return files, ""

    async def activate(self, version: int) -> ModelVersion:
        version = check_positive("version", version)
        return await self.registry.activate(version, reason="ActivateModel")

    async def rollback(self) -> ModelVersion:
        target = await self._db(model_store.rollback_target)
        return await self.registry.activate(target, reason="RollbackModel")

    async def list_activations(self, limit: int) -> list[ModelActivation]:
        limit = check_limit("limit", limit, 50)
        return await self._db(lambda s: model_store.list_activations(s, limit=limit))

    async def prune(self, keep: int, dry_run: bool) -> PruneResult:
        if keep < 0:
            raise InvalidArgument("keep", f"is {keep}; accepted: 0 (the server setting) or more")
        keep = keep or self.settings.server.keep_ready_models
        return await self._run(
            lambda: prune(self.settings, self.engine, keep_ready=keep, dry_run=dry_run)
        )

    # --- jobs ----------------------------------------------------------------------------

    async def start_training(self, params_json: str) -> Job:
        return await self._run(submit_training, self.settings, self.engine, params_json)

    async def build_engine(self, version: int, precision: str) -> Job:
        version = check_positive("version", version)
        precision = precision or "fp16"
        if precision not in ("fp16", "bf16", "fp32"):
            raise InvalidArgument(
                "precision", f"is {precision[:20]!r}; accepted: fp16 (the default), bf16, fp32"
            )
        return await self._run(queue_engine_build, self.settings, self.engine, version, precision)

    async def training_options(self) -> list[TrainingOption]:
        return training_options(self.settings)

    async def list_jobs(self, limit: int) -> list[Job]:
        limit = check_limit("limit", limit, 50)
        return await self._db(lambda s: job_store.list_jobs(s, limit=limit))

    async def get_job(self, job_id: int) -> Job:
        job_id = check_positive("id", job_id)
        return await self._db(lambda s: job_store.get_job(s, job_id=job_id))

    async def cancel_job(self, job_id: int) -> Job:
        job_id = check_positive("id", job_id)
        return await self._db(lambda s: job_store.cancel_job(s, job_id=job_id))

    # --- live state ----------------------------------------------------------------------

    def server_stats(self) -> StatsView:
        model = self.registry.current
        return StatsView(
            figures=self.stats.snapshot(),
            backend=model.backend.name if model else "none",
            device=model.backend.device if model else "",
            serving_version=model.version if model else 0,
            configured_version=self.registry.configured_version,
            note=self.registry.note,
            requests_total=self.stats.requests_total,
            feedback_events_total=self.stats.feedback_total,
            cached_users=len(self.history),
            history_cache_bytes=self.history.nbytes,
            label_cache_entries=self.catalogue.cached_label_entries,
            calls_in_progress=self.slots.unary,
            streams_open=sum(self.slots.streams.values()),
            batches_total=self.stats.batches_total,
            batched_histories_total=self.stats.batched_histories_total,
            state_cache_hits=self.states.hits,
            replica_id=self.deployment.replica_id,
            series=self.stats.series(),
            replicas=self.deployment.replicas,
        )

    # --- users and items -----------------------------------------------------------------

    async def user_history(self, user_id: str, limit: int) -> list[HistoryEventView]:
        check_id("user_id", user_id)
        limit = check_limit("limit", limit, 50)
        events = await self._db(
            lambda s: event_store.recent_events(s, user_id=user_id, limit=limit)
        )
        titles = await self.catalogue.titles([item for item, _, _ in events])
        return [HistoryEventView(item, titles[item], kind, when) for item, kind, when in events]

    async def list_items(
        self, query: str, limit: int, unavailable_only: bool, item_ids: Sequence[str] = ()
    ) -> list[ItemView]:
        if len(query) > MAX_ID_LEN:
            raise InvalidArgument(
                "query", f"is {len(query)} characters long; at most {MAX_ID_LEN} are accepted"
            )
        limit = check_limit("limit", limit, 50)
        if len(item_ids) > MAX_LIMIT:
            raise InvalidArgument(
                "item_ids", f"has {len(item_ids)} entries; at most {MAX_LIMIT} are accepted"
            )
        for i, item_id in enumerate(item_ids):
            check_id(f"item_ids[{i}]", item_id)
        rows = await self._db(
            lambda s: item_store.search_items(
                s, query=query, limit=limit, unavailable_only=unavailable_only, item_ids=item_ids
            )
        )
        model = self.registry.current
        known = model.rows if model is not None else {}
        found = [
            ItemView(
                r.item_id,
                r.title,
                list(r.labels or []),
                r.available,
                True,
                int(as_utc(r.created_at).timestamp() * 1000) if r.created_at else 0,
                r.item_id in known,
            )
            for r in rows
        ]
        if model is None or unavailable_only or len(found) >= limit:
            return found
        # Items the served model knows that have no catalogue entry (a catalogue is
        # optional), searchable by id so that an operator can still hide them. A matching
        # id that is in the catalogue was found above (the result was not cut short).
        listed = {view.item_id for view in found}
        needle = query.lower()
        extra: list[ItemView] = []
        wanted = set(item_ids)
        for item_id in item_ids or model.bundle.vocab:
            if wanted and item_id not in model.rows:
                continue
            if len(found) + len(extra) >= limit:
                break
            if item_id not in listed and (not needle or needle in item_id.lower()):
                extra.append(ItemView(item_id, "", [], True, False))
        return sorted(found + extra, key=lambda view: view.item_id)

    async def upsert_items(self, items: Sequence[ItemView]) -> tuple[int, int]:
        """Creates or replaces catalogue entries, each field checked and named."""
        check_size("items", len(items), MAX_AVAILABILITY_ITEMS, "items")
        rows = []
        for i, item in enumerate(items):
            check_id(f"items[{i}].item_id", item.item_id)
            if len(item.title) > MAX_TITLE_LEN or not item.title.isprintable():
                raise InvalidArgument(
                    f"items[{i}].title",
                    f"accepted: up to {MAX_TITLE_LEN} printable characters (is "
                    f"{len(item.title)} long)",
                )
            if len(item.labels) > MAX_ITEM_LABELS:
                raise InvalidArgument(
                    f"items[{i}].labels",
                    f"has {len(item.labels)} labels; at most {MAX_ITEM_LABELS} are accepted",
                )
            for j, label in enumerate(item.labels):
                check_id(f"items[{i}].labels[{j}]", label, MAX_LABEL_LEN)
            check_epoch_ms(f"items[{i}].created_at_ms", item.created_at_ms, zero="keep or now")
            created = (
                datetime.fromtimestamp(item.created_at_ms / 1000, UTC)
                if item.created_at_ms
                else None
            )
            rows.append(
                Item(
                    item_id=item.item_id,
                    title=item.title,
                    labels=list(item.labels),
                    available=item.available,
                    created_at=created,
                )
            )
        counts = await self._db(lambda s: item_store.upsert_items(s, items=rows))
        await self.catalogue.refresh()  # this replica now, the others at their poll
        await self.registry.refresh()
        return counts

    async def set_item_availability(self, item_ids: Sequence[str], available: bool) -> int:
        check_size("item_ids", len(item_ids), MAX_AVAILABILITY_ITEMS, "item ids")
        for i, item_id in enumerate(item_ids):
            check_id(f"item_ids[{i}]", item_id)
        updated = await self._db(
            lambda s: item_store.set_item_availability(
                s, item_ids=list(item_ids), available=available
            )
        )
        await self.registry.refresh()  # this replica applies it now, the others at their poll
        return updated

    # --- experiments ---------------------------------------------------------------------

    async def set_traffic_split(
        self, arms: Sequence[tuple[int, float]], shadow_version: int, shadow_share: float
    ) -> ExperimentView:
        """Checks every arm (and the shadow), loads each version here (a version that
        does not load is refused, naming its field), then replaces the split."""
        rows: list[TrafficArm] = []
        seen: set[int] = set()
        for i, (version, weight) in enumerate(arms):
            if version < 1 or version in seen:
                raise InvalidArgument(
                    f"arms[{i}].version", f"is {version}; accepted: a model version >= 1, once"
                )
            if not (weight > 0 and math.isfinite(weight)):
                raise InvalidArgument(f"arms[{i}].weight", f"is {weight}; accepted: > 0")
            seen.add(version)
            rows.append(TrafficArm(version=version, weight=weight))
        if len(rows) == 1:
            raise InvalidArgument("arms", "has 1 arm; accepted: none (no split) or 2 or more")
        if shadow_version:
            share = shadow_share or DEFAULT_SHADOW_SHARE
            if shadow_version in seen:
                raise InvalidArgument(
                    "shadow_version", f"is {shadow_version}, an arm; a shadow is never served"
                )
            if not 0 < share <= 1:
                raise InvalidArgument(
                    "shadow_share", f"is {shadow_share}; accepted: 0 < share <= 1"
                )
            rows.append(TrafficArm(version=shadow_version, weight=share, shadow=True))
        for i, row in enumerate(rows):
            where = "shadow_version" if row.shadow else f"arms[{i}].version"
            try:
                await self.registry.load_version(row.version)
            except (NotFound, FailedPrecondition, BundleError) as exc:
                raise InvalidArgument(where, f"cannot be served: {exc}") from exc
        await self._db(lambda s: experiment_store.set_traffic_arms(s, arms=rows))
        await self.registry.refresh()  # this replica now, the others at their poll
        return await self.experiment()

    async def experiment(self) -> ExperimentView:
        def read(session: Session) -> ExperimentView:
            rows = experiment_store.traffic_arms(session)
            shadow = next((r for r in rows if r.shadow), None)
            return ExperimentView(
                [(r.version, r.weight) for r in rows if not r.shadow],
                shadow.version if shadow else 0,
                shadow.weight if shadow else 0.0,
                experiment_store.latest_online_metrics(session),
            )

        return await self._db(read)

    async def promote_arm(self, version: int) -> ExperimentView:
        """Activates ``version`` (checked as ActivateModel), then ends the split."""
        version = check_positive("version", version)
        current = await self.experiment()
        if version not in [v for v, _ in current.arms] and version != current.shadow_version:
            raise InvalidArgument("version", f"is {version}, not an arm of the split or its shadow")
        await self.registry.activate(version, reason="PromoteArm")
        await self._db(lambda s: experiment_store.set_traffic_arms(s, arms=[]))
        await self.registry.refresh()
        return await self.experiment()
