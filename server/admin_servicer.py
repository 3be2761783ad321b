"""The ModelAdmin gRPC servicer: protobuf to the operator API's domain calls
(server/admin.py) and back, nothing more."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import grpc

from server.admin import AdminService, StatsView
from server.admin_base import check_limit
from server.admin_catalogue import ItemView
from server.admin_experiments import ExperimentView
from server.errors import RpcOptions, rpc
from server.pipeline.validate import check_epoch_ms
from shared.model.params import TrainingOption
from shared.model.rules import Rule, RuleSet
from shared.proto.recserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
)
from shared.storage.tables import Job, ModelActivation, ModelVersion, as_utc, utcnow


def _ms(when: datetime | None) -> int:
    return int(as_utc(when).timestamp() * 1000) if when else 0


def model_to_proto(model: ModelVersion) -> admin_pb2.ModelVersion:
    return admin_pb2.ModelVersion(
        version=model.version or 0,
        status=str(model.status),
        metrics={k: float(v) for k, v in (model.metrics or {}).items()},
        artifact_path=model.artifact_path,
        data_watermark=model.data_watermark,
        config_json=json.dumps(model.config or {}, sort_keys=True),
        checksum=model.checksum,
        created_at_ms=_ms(model.created_at),
        job_id=model.job_id or 0,
        activated_at_ms=_ms(model.activated_at),
        size_bytes=model.size_bytes,
    )


def _point(point: dict[str, float]) -> admin_pb2.EpochPoint:
    return admin_pb2.EpochPoint(
        epoch=int(point.get("epoch", 0)),
        loss=float(point.get("loss", math.nan)),
        val_ndcg_at_10=float(point.get("val_ndcg@10", math.nan)),
        seconds=float(point.get("seconds", 0.0)),
    )


def job_to_proto(job: Job) -> admin_pb2.Job:
    return admin_pb2.Job(
        id=job.id or 0,
        kind=str(job.kind),
        status=str(job.status),
        progress=job.progress,
        message=job.message,
        error=job.error,
        params_json=json.dumps(job.params or {}, sort_keys=True),
        created_at_ms=_ms(job.created_at),
        started_at_ms=_ms(job.started_at),
        finished_at_ms=_ms(job.finished_at),
        model_version=job.model_version or 0,
        log=list(job.log or []),
        trigger=str(job.trigger),
        worker=job.worker,
        attempts=job.attempts,
        heartbeat_at_ms=_ms(job.heartbeat_at),
        cancel_requested=job.cancel_requested,
        curve=[_point(p) for p in job.curve or []],
        resolved=param_choices(job.resolved or []),
    )


def param_choices(resolved: list[dict[str, Any]]) -> list[admin_pb2.ParamChoice]:
    return [
        admin_pb2.ParamChoice(
            name=str(choice.get("name", "")),
            value_json=json.dumps(choice.get("value")),
            source=str(choice.get("source", "")),
            reason=str(choice.get("reason", "")),
        )
        for choice in resolved
    ]


def _activation(record: ModelActivation) -> admin_pb2.Activation:
    return admin_pb2.Activation(
        version=record.version,
        previous_version=record.previous_version or 0,
        activated_at_ms=_ms(record.activated_at),
        reason=record.reason,
    )


def _option(option: TrainingOption) -> admin_pb2.TrainingOption:
    return admin_pb2.TrainingOption(
        name=option.name,
        type=option.type,
        default_json=json.dumps(option.default),
        minimum=option.minimum,
        maximum=option.maximum,
        exclusive_minimum=option.exclusive_minimum,
        exclusive_maximum=option.exclusive_maximum,
        choices=option.choices,
        help=option.help,
        nullable=option.nullable,
        source=option.source,
    )


def stats_to_proto(view: StatsView) -> admin_pb2.ServerStats:
    return admin_pb2.ServerStats(
        **view.figures,
        backend=view.backend,
        device=view.device,
        active_version=view.serving_version,
        configured_version=view.configured_version,
        note=view.note,
        requests_total=view.requests_total,
        feedback_events_total=view.feedback_events_total,
        cached_users=view.cached_users,
        history_cache_bytes=view.history_cache_bytes,
        label_cache_entries=view.label_cache_entries,
        calls_in_progress=view.calls_in_progress,
        streams_open=view.streams_open,
        batches_total=view.batches_total,
        batched_histories_total=view.batched_histories_total,
        state_cache_hits=view.state_cache_hits,
        replica_id=view.replica_id,
        series=[admin_pb2.StatsSample(**asdict(sample)) for sample in view.series],
        replicas=[admin_pb2.Replica(**asdict(replica)) for replica in view.replicas],
    )


def properties_from_proto(properties: Sequence[admin_pb2.Property]) -> dict[str, Any]:
    """Typed properties from the wire; a property that sets none or several of
    categories, number and text keeps a value the checks refuse, naming it."""
    out: dict[str, Any] = {}
    for p in properties:
        given = [
            v
            for v, present in (
                (list(p.categories), bool(p.categories)),
                (p.number, p.HasField("number")),
                (p.text, p.HasField("text")),
            )
            if present
        ]
        out[p.key] = given[0] if len(given) == 1 else None
    return out


def item_to_proto(item: ItemView) -> admin_pb2.CatalogueItem:
    fields = asdict(item)
    properties = fields.pop("properties")
    return admin_pb2.CatalogueItem(
        **fields,
        properties=[
            admin_pb2.Property(key=k, categories=v)
            if isinstance(v, list)
            else admin_pb2.Property(key=k, number=v)
            if isinstance(v, int | float)
            else admin_pb2.Property(key=k, text=v)
            for k, v in sorted(properties.items())
        ],
    )


def _when(field: str, ms: int) -> datetime | None:
    check_epoch_ms(field, ms, zero="open (no bound)")
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC) if ms else None


def rule_set_from_proto(message: admin_pb2.RuleSet) -> RuleSet:
    return RuleSet(
        name=message.name,
        rules=tuple(
            Rule(r.kind, r.label, r.factor, r.max_items, r.item_id, r.slot) for r in message.rules
        ),
        active_from=_when("rule_set.active_from_ms", message.active_from_ms),
        active_until=_when("rule_set.active_until_ms", message.active_until_ms),
        description=message.description,
    )


def rule_set_to_proto(rule_set: RuleSet, now: datetime) -> admin_pb2.RuleSet:
    return admin_pb2.RuleSet(
        name=rule_set.name,
        rules=[admin_pb2.Rule(**rule.to_json()) for rule in rule_set.rules],  # type: ignore[arg-type]
        active_from_ms=_ms(rule_set.active_from),
        active_until_ms=_ms(rule_set.active_until),
        description=rule_set.description,
        updated_ms=_ms(rule_set.updated_at),
        updated_by=rule_set.updated_by,
        active=rule_set.active(now),
    )


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServicer):
    """ModelAdmin: protobuf to AdminService calls and back. Who may call it is decided
    by the call guard (server/guard.py)."""

    def __init__(self, admin: AdminService, options: RpcOptions) -> None:
        self.admin = admin
        self.options = options

    @rpc
    async def ListModels(  # noqa: N802  (gRPC method name)
        self, request: admin_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelsResponse:
        models, active = await self.admin.list_models(request.limit)
        return admin_pb2.ListModelsResponse(
            models=[model_to_proto(m) for m in models], active_version=active
        )

    @rpc
    async def GetModel(  # noqa: N802
        self, request: admin_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelVersion:
        return model_to_proto(await self.admin.get_model(request.version))

    @rpc
    async def GetModelDetails(  # noqa: N802
        self, request: admin_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelDetails:
        details = await self.admin.model_details(request.version)
        return admin_pb2.ModelDetails(
            model=model_to_proto(details.model),
            files=[admin_pb2.BundleFile(**asdict(f)) for f in details.files],
            problem=details.problem,
            activations=[_activation(a) for a in details.activations],
            training=param_choices((details.model.config or {}).get("sources", [])),
        )

    @rpc
    async def ActivateModel(  # noqa: N802
        self, request: admin_pb2.ActivateModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelVersion:
        return model_to_proto(await self.admin.activate(request.version))

    @rpc
    async def RollbackModel(  # noqa: N802
        self, request: admin_pb2.RollbackModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelVersion:
        return model_to_proto(await self.admin.rollback())

    @rpc
    async def ListActivations(  # noqa: N802
        self, request: admin_pb2.ListActivationsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListActivationsResponse:
        records = await self.admin.list_activations(request.limit)
        return admin_pb2.ListActivationsResponse(activations=[_activation(a) for a in records])

    @rpc
    async def PruneModels(  # noqa: N802
        self, request: admin_pb2.PruneModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PruneModelsResponse:
        result = await self.admin.prune(request.keep, request.dry_run)
        return admin_pb2.PruneModelsResponse(pruned=result.pruned, freed_bytes=result.freed_bytes)

    @rpc
    async def StartTraining(  # noqa: N802
        self, request: admin_pb2.StartTrainingRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        return job_to_proto(await self.admin.start_training(request.params_json))

    @rpc
    async def BuildEngine(  # noqa: N802
        self, request: admin_pb2.BuildEngineRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        return job_to_proto(await self.admin.build_engine(request.version, request.precision))

    @rpc
    async def GetTrainingOptions(  # noqa: N802
        self, request: admin_pb2.GetTrainingOptionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.TrainingOptions:
        options = await self.admin.training_options()
        return admin_pb2.TrainingOptions(options=[_option(o) for o in options])

    @rpc
    async def ListJobs(  # noqa: N802
        self, request: admin_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListJobsResponse:
        jobs = await self.admin.list_jobs(request.limit)
        return admin_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    @rpc
    async def GetJob(  # noqa: N802
        self, request: admin_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        return job_to_proto(await self.admin.get_job(request.id))

    @rpc
    async def CancelJob(  # noqa: N802
        self, request: admin_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        return job_to_proto(await self.admin.cancel_job(request.id))

    @rpc
    async def GetServerStats(  # noqa: N802
        self, request: admin_pb2.GetServerStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ServerStats:
        return stats_to_proto(self.admin.server_stats())

    @rpc
    async def GetUserHistory(  # noqa: N802
        self, request: admin_pb2.GetUserHistoryRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UserHistory:
        events = await self.admin.user_history(request.user_id, request.limit)
        return admin_pb2.UserHistory(
            user_id=request.user_id,
            events=[
                admin_pb2.HistoryEvent(
                    item_id=e.item_id, title=e.title, kind=e.kind, timestamp_ms=_ms(e.event_time)
                )
                for e in events
            ],
        )

    @rpc
    async def ListItems(  # noqa: N802
        self, request: admin_pb2.ListItemsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListItemsResponse:
        items = await self.admin.list_items(
            request.query, request.limit, request.unavailable_only, list(request.item_ids)
        )
        return admin_pb2.ListItemsResponse(items=[item_to_proto(item) for item in items])

    @rpc
    async def UpsertItems(  # noqa: N802
        self, request: admin_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UpsertItemsResponse:
        created, updated = await self.admin.upsert_items(
            [
                ItemView(
                    i.item_id,
                    i.title,
                    list(i.labels),
                    i.available,
                    True,
                    i.created_at_ms,
                    False,
                    properties_from_proto(i.properties),
                )  # fmt: skip
                for i in request.items
            ]
        )
        return admin_pb2.UpsertItemsResponse(created=created, updated=updated)

    @rpc
    async def SetItemAvailability(  # noqa: N802
        self, request: admin_pb2.SetItemAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetItemAvailabilityResponse:
        updated = await self.admin.set_item_availability(list(request.item_ids), request.available)
        return admin_pb2.SetItemAvailabilityResponse(updated=updated)

    @rpc
    async def SetTrafficSplit(  # noqa: N802
        self, request: admin_pb2.SetTrafficSplitRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Experiment:
        arms = [(a.version, a.weight) for a in request.arms]
        view = await self.admin.set_traffic_split(
            arms, request.shadow_version, request.shadow_share
        )
        return experiment_to_proto(view)

    @rpc
    async def GetExperiment(  # noqa: N802
        self, request: admin_pb2.GetExperimentRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Experiment:
        return experiment_to_proto(await self.admin.experiment())

    @rpc
    async def PromoteArm(  # noqa: N802
        self, request: admin_pb2.PromoteArmRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Experiment:
        return experiment_to_proto(await self.admin.promote_arm(request.version))

    @rpc
    async def ListRuleSets(  # noqa: N802
        self, request: admin_pb2.ListRuleSetsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListRuleSetsResponse:
        now = utcnow()
        found = await self.admin.list_rule_sets()
        return admin_pb2.ListRuleSetsResponse(rule_sets=[rule_set_to_proto(r, now) for r in found])

    @rpc
    async def PutRuleSet(  # noqa: N802
        self, request: admin_pb2.PutRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RuleSet:
        stored = await self.admin.put_rule_set(rule_set_from_proto(request.rule_set))
        return rule_set_to_proto(stored, utcnow())

    @rpc
    async def DeleteRuleSet(  # noqa: N802
        self, request: admin_pb2.DeleteRuleSetRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteRuleSetResponse:
        await self.admin.delete_rule_set(request.name)
        return admin_pb2.DeleteRuleSetResponse(deleted=True)

    @rpc
    async def DeleteUser(  # noqa: N802
        self, request: admin_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteUserResponse:
        done = await self.admin.delete_user(request.user_id)
        return admin_pb2.DeleteUserResponse(deleted_at_ms=done.deleted_at_ms, **done.counts)

    @rpc
    async def ExportUser(  # noqa: N802
        self, request: admin_pb2.ExportUserRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ExportUserResponse:
        page, token = await self.admin.export_user(
            request.user_id, request.page_token, request.page_size
        )
        return admin_pb2.ExportUserResponse(json=page, next_page_token=token)

    @rpc
    async def ListAuditEntries(  # noqa: N802
        self, request: admin_pb2.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditEntriesResponse:
        entries = await self.admin.audit(check_limit("limit", request.limit, 100))
        return admin_pb2.ListAuditEntriesResponse(
            entries=[
                admin_pb2.AuditEntry(
                    at_ms=_ms(e.at),
                    action=e.action,
                    subject=e.subject,
                    by=e.by,
                    detail_json=json.dumps(e.detail, sort_keys=True),
                )  # fmt: skip
                for e in entries
            ]
        )


def experiment_to_proto(view: ExperimentView) -> admin_pb2.Experiment:
    return admin_pb2.Experiment(
        arms=[admin_pb2.TrafficArm(version=v, weight=w) for v, w in view.arms],
        shadow_version=view.shadow_version,
        shadow_share=view.shadow_share,
        metrics=[
            admin_pb2.OnlineMetric(
                model_version=m.model_version,
                arm=m.arm,
                computed_at_ms=_ms(m.computed_at),
                window_hours=m.window_hours,
                impressions=m.impressions,
                ctr=m.ctr,
                hit_rate=m.hit_rate,
                attributed_share=m.attributed_share,
                shadow_requests=m.shadow_requests,
                shadow_overlap=m.shadow_overlap,
                shadow_p50_ms=m.shadow_p50_ms,
            )
            for m in view.metrics
        ],
    )
