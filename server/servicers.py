"""gRPC servicers: translate protobuf to domain calls and back, nothing more."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc

from server.errors import RpcOptions, rpc
from server.pipeline.request import (
    FeedbackEventIn,
    Recommendation,
    RecommendQuery,
    Similar,
    SimilarQuery,
)
from server.pipeline.service import FeedbackService, RecommendService
from server.pipeline.similar import SimilarItemsService
from server.stats import ServerStats
from shared.proto.recserve.v1 import (
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
        FeedbackEventIn(
            e.event_id, e.user_id, e.item_id, e.kind, e.value, e.timestamp_ms, e.recommendation_id
        )
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
        include_titles=request.include_titles,
        explain=request.explain,
        include_labels=request.include_labels,
        exclude_labels=request.exclude_labels,
        boost=[(b.label, b.factor) for b in request.boost],
        bury=[(b.label, b.factor) for b in request.bury],
        skip_rule_sets=request.skip_rule_sets,
        shown_cap=request.shown_cap,
        shown_window_hours=request.shown_window_hours,
    )


def _similar_response(result: Similar) -> recommender_pb2.SimilarItemsResponse:
    return recommender_pb2.SimilarItemsResponse(
        items=[
            recommender_pb2.ScoredItem(item_id=i, score=s, title=result.titles.get(i, ""))
            for i, s in result.items
        ],
        model_version=result.model_version,
        unknown_item_ids=result.unknown_item_ids,
    )


def _rules(result: Recommendation, explain: bool) -> dict[str, list[recommender_pb2.RuleEffect]]:
    """Per item, what the business rules did to it (shown under ``explain``)."""
    found: dict[str, list[recommender_pb2.RuleEffect]] = {}
    if explain:
        for e in result.rule_effects:
            effect = recommender_pb2.RuleEffect(
                rule=e.sourced.described, source=e.sourced.source, effect=e.effect
            )
            found.setdefault(e.item_id, []).append(effect)
    return found


def _response(result: Recommendation, explain: bool = False) -> recommender_pb2.RecommendResponse:
    titles = result.titles
    rules = _rules(result, explain)
    return recommender_pb2.RecommendResponse(
        items=[
            recommender_pb2.ScoredItem(
                item_id=i,
                score=s,
                title=titles.get(i, ""),
                explored=i in result.explored,
                explanations=[
                    recommender_pb2.Explanation(
                        item_id=e.item_id, title=e.title, weight=e.weight, events_ago=e.events_ago
                    )
                    for e in result.explanations.get(i, ())
                ],
                rules=rules.get(i, ()),
            )
            for i, s in result.items
        ],
        model_version=result.model_version,
        source=SOURCES[result.source],
        history_used=result.history_used,
        recommendation_id=result.recommendation_id,
    )


class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
    def __init__(
        self,
        recommend: RecommendService,
        feedback: FeedbackService,
        similar: SimilarItemsService,
        stats: ServerStats,
        options: RpcOptions,
    ) -> None:
        self.recommend = recommend
        self.feedback = feedback
        self.similar = similar
        self.stats = stats
        self.options = options

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

    @rpc
    async def Recommend(  # noqa: N802  (gRPC method name)
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        return await self._timed(self._recommend(request))

    async def _recommend(
        self, request: recommender_pb2.RecommendRequest
    ) -> recommender_pb2.RecommendResponse:
        return _response(await self.recommend.recommend(_query(request)), request.explain)

    @rpc
    async def RecommendBatch(  # noqa: N802
        self, request: recommender_pb2.RecommendBatchRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendBatchResponse:
        return await self._timed(self._recommend_batch(request))

    async def _recommend_batch(
        self, request: recommender_pb2.RecommendBatchRequest
    ) -> recommender_pb2.RecommendBatchResponse:
        results = await self.recommend.recommend_many([_query(r) for r in request.requests])
        return recommender_pb2.RecommendBatchResponse(
            responses=[
                _response(result, r.explain)
                for result, r in zip(results, request.requests, strict=True)
            ]
        )

    @rpc
    async def SimilarItems(  # noqa: N802
        self, request: recommender_pb2.SimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.SimilarItemsResponse:
        return await self._timed(self._similar(request))

    async def _similar(
        self, request: recommender_pb2.SimilarItemsRequest
    ) -> recommender_pb2.SimilarItemsResponse:
        query = SimilarQuery(
            item_ids=request.item_ids,
            k=request.k,
            user_id=request.user_id,
            exclude_item_ids=request.exclude_item_ids,
            candidate_item_ids=request.candidate_item_ids,
            allow_seen=request.allow_seen,
            include_titles=request.include_titles,
            include_labels=request.include_labels,
            exclude_labels=request.exclude_labels,
        )
        return _similar_response(await self.similar.similar(query))

    @rpc
    async def Feedback(  # noqa: N802
        self, request: recommender_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.FeedbackResponse:
        result = await self.feedback.feedback(_events(request))
        self.stats.record_feedback(result.stored, result.duplicates)
        return recommender_pb2.FeedbackResponse(
            stored=result.stored,
            duplicates=result.duplicates,
            deleted_user_events=result.deleted_user_events,
        )

    @rpc
    async def FeedbackStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[recommender_pb2.FeedbackRequest],
        context: grpc.aio.ServicerContext,
    ) -> recommender_pb2.FeedbackResponse:
        stored = duplicates = deleted = 0
        async for request in request_iterator:
            result = await self.feedback.feedback(_events(request))
            self.stats.record_feedback(result.stored, result.duplicates)
            stored += result.stored
            duplicates += result.duplicates
            deleted += result.deleted_user_events
        return recommender_pb2.FeedbackResponse(
            stored=stored, duplicates=duplicates, deleted_user_events=deleted
        )
