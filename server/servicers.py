"""gRPC servicers: translate protobuf to domain calls and back, nothing more."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, TypeVar

import grpc
from sqlalchemy.engine import Engine

from server.core import FeedbackEventIn, Recommendation, RecommendationCore, RecommendQuery
from server.errors import grpc_errors
from server.stats import ServerStats
from shared import crud
from shared.config import Settings
from shared.db import session_scope
from shared.errors import InvalidArgument, Unauthenticated
from shared.jobs import submit_training
from shared.models import Job, ModelVersion
from shared.proto.recserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)

T = TypeVar("T")
SOURCES = {
    "model": recommender_pb2.SOURCE_MODEL,
    "popularity": recommender_pb2.SOURCE_POPULARITY_FALLBACK,
}


def _events(request: recommender_pb2.FeedbackRequest) -> list[FeedbackEventIn]:
    return [
        FeedbackEventIn(e.event_id, e.user_id, e.item_id, e.kind, e.value, e.timestamp_ms)
        for e in request.events
    ]


def _query(request: recommender_pb2.RecommendRequest) -> RecommendQuery:
    return RecommendQuery(
        user_id=request.user_id,
        k=request.k,
        history=request.history,
        exclude_item_ids=request.exclude_item_ids,
        candidate_item_ids=request.candidate_item_ids,
        allow_seen=request.allow_seen,
    )


def _response(result: Recommendation) -> recommender_pb2.RecommendResponse:
    return recommender_pb2.RecommendResponse(
        items=[recommender_pb2.ScoredItem(item_id=i, score=s) for i, s in result.items],
        model_version=result.model_version,
        source=SOURCES[result.source],
        history_used=result.history_used,
    )


class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, core: RecommendationCore, stats: ServerStats) -> None:
        self.core = core
        self.stats = stats

    async def _timed(self, call: Awaitable[T]) -> T:
        """Awaits ``call`` and records its latency and outcome in the server stats."""
        started = time.perf_counter()
        ok = False
        try:
            response = await call
            ok = True
            return response
        finally:
            self.stats.record_request(time.perf_counter() - started, ok)

    async def Recommend(  # noqa: N802  (gRPC method name)
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        return await self._timed(self._recommend(request, context))

    @grpc_errors
    async def _recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        return _response(await self.core.recommend(_query(request)))

    async def RecommendBatch(  # noqa: N802
        self, request: recommender_pb2.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendBatchResponse:
        return await self._timed(self._recommend_batch(request, context))

    @grpc_errors
    async def _recommend_batch(
        self, request: recommender_pb2.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendBatchResponse:
        results = await self.core.recommend_many([_query(r) for r in request.requests])
        return recommender_pb2.RecommendBatchResponse(responses=[_response(r) for r in results])

    @grpc_errors
    async def Feedback(  # noqa: N802
        self, request: recommender_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.FeedbackResponse:
        result = await self.core.feedback(_events(request))
        self.stats.record_feedback(result.stored)
        return recommender_pb2.FeedbackResponse(stored=result.stored, duplicates=result.duplicates)

    @grpc_errors
    async def FeedbackStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[recommender_pb2.FeedbackRequest],
        context: grpc.aio.ServicerContext,
    ) -> recommender_pb2.FeedbackResponse:
        stored = duplicates = 0
        async for request in request_iterator:
            result = await self.core.feedback(_events(request))
            self.stats.record_feedback(result.stored)
            stored += result.stored
            duplicates += result.duplicates
        return recommender_pb2.FeedbackResponse(stored=stored, duplicates=duplicates)


def _ms(when: datetime | None) -> int:
    return int(when.timestamp() * 1000) if when else 0


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
    )


def _limit(field: str, value: int, default: int) -> int:
    if value < 0 or value > 1000:
        raise InvalidArgument(field, f"is {value}; accepted: 1..1000 (0 means {default})")
    return value or default


def _positive(field: str, value: int) -> int:
    if value < 1:
        raise InvalidArgument(field, f"is {value}; accepted: an id >= 1")
    return value


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServicer):
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        executor: Executor,
        core: RecommendationCore,
        stats: ServerStats,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.executor = executor
        self.core = core
        self.stats = stats

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        token = self.settings.server.admin_token
        if not token:
            return
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {token}":
            raise Unauthenticated(
                "ModelAdmin needs the metadata 'authorization: Bearer <token>' with the "
                "server's admin token"
            )

    async def _db(self, call: Callable[[Any], T]) -> T:
        def run() -> T:
            with session_scope(self.engine) as session:
                return call(session)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    @grpc_errors
    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        limit = _limit("limit", request.limit, 100)
        models = await self._db(lambda s: crud.list_model_versions(s, limit=limit))
        active = await self._db(crud.get_active_model)
        return admin_pb2.ListModelsResponse(
            models=[model_to_proto(m) for m in models],
            active_version=(active.version or 0) if active else 0,
        )

    @grpc_errors
    async def GetModel(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        version = _positive("version", request.version)
        model = await self._db(lambda s: crud.get_model_version(s, version=version))
        return model_to_proto(model)

    @grpc_errors
    async def ActivateModel(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        version = _positive("version", request.version)
        model = await self._db(lambda s: crud.activate_model(s, version=version))
        await self.core.registry.refresh()  # this replica swaps now; others at their next poll
        return model_to_proto(model)

    @grpc_errors
    async def StartTraining(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        job = await asyncio.get_running_loop().run_in_executor(
            self.executor, submit_training, self.settings, self.engine, request.params_json
        )
        return job_to_proto(job)

    @grpc_errors
    async def ListJobs(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        limit = _limit("limit", request.limit, 50)
        jobs = await self._db(lambda s: crud.list_jobs(s, limit=limit))
        return admin_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    @grpc_errors
    async def GetJob(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        job_id = _positive("id", request.id)
        return job_to_proto(await self._db(lambda s: crud.get_job(s, job_id=job_id)))

    @grpc_errors
    async def GetServerStats(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        self._authorize(context)
        snap = self.stats.snapshot()
        model = self.core.registry.current
        return admin_pb2.ServerStats(
            **snap,
            backend=model.backend.name if model else "none",
            device=model.backend.device if model else "",
            active_version=model.version if model else 0,
            requests_total=self.stats.requests_total,
            feedback_events_total=self.stats.feedback_total,
            cached_users=len(self.core.history),
            batches_total=self.stats.batches_total,
            batched_histories_total=self.stats.batched_histories_total,
            state_cache_hits=self.core.states.hits,
        )
