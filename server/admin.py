"""The operator API as plain domain calls (ModelAdmin's data plane; no gRPC here).

ModelAdminServicer translates protobuf to these calls and back, as RecommenderServicer
does with the request pipeline. Database work runs in the executor; every input is
validated here, with errors that name the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from server.admin_base import MAX_LIMIT, check_limit, check_positive
from server.admin_catalogue import CatalogueAdmin
from server.admin_experiments import ExperimentAdmin
from server.admin_rules import RulesAdmin
from server.admin_users import UsersAdmin
from server.deployment import ReplicaView
from server.stats import Sample
from shared.model import bundle as bundle_format
from shared.model.params import TrainingOption, training_options
from shared.storage import job_store, model_store
from shared.storage.retention import PruneResult, prune
from shared.storage.tables import (
    Job,
    ModelActivation,
    ModelVersion,
)
from shared.training.jobs import queue_engine_build, submit_training
from shared.wire.errors import BundleError, InvalidArgument


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


class AdminService(CatalogueAdmin, ExperimentAdmin, RulesAdmin, UsersAdmin):
    """The operator API: models, jobs and the server's figures here; the catalogue,
    experiments, business rules and users' data in their own parts."""

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

    # --- experiments ---------------------------------------------------------------------
