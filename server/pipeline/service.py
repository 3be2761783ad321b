"""Recommend, RecommendBatch and Feedback as sequences of the pipeline's stages (see
server/pipeline/__init__.py); each stage's time goes to recserve_stage_seconds{stage}."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

import numpy as np

from server import metrics
from server.batcher import ADMITTED
from server.catalogue import Catalogue
from server.feedback import FeedbackWriter
from server.history import HistoryCache
from server.invalidation import Invalidations
from server.pipeline.eligibility import EligibilityPolicy, Eligible
from server.pipeline.encoder import Encoder, known_rows
from server.pipeline.explain import Explainer
from server.pipeline.explore import ExplorationSlots
from server.pipeline.measure import Measurement
from server.pipeline.prewarm import Prewarm
from server.pipeline.rank import Ranker
from server.pipeline.request import FeedbackEventIn, FeedbackResult, Recommendation, RecommendQuery
from server.pipeline.rules import RuleBook, Steering
from server.pipeline.shown import ShownLog
from server.pipeline.tasks import BackgroundTasks
from server.pipeline.validate import validate_batch, validate_events, validate_query
from server.registry import ModelRegistry
from server.served_model import ServingModel
from shared.config import ServerSettings
from shared.storage.ingest import first_per_event_id
from shared.wire.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
STAGES = {name: metrics.STAGE.labels(stage=name) for name in metrics.STAGE_NAMES}


@dataclass
class Basis:
    """What ranked a result: the explain stage's input (None: popularity ranked it)."""

    model: ServingModel
    seen: np.ndarray


class HistoryStage:
    """The history stage: the request's own history, or the user's stored one from the
    cache (after any other replica's Feedback already on its way has been applied)."""

    def __init__(self, history: HistoryCache, invalidations: Invalidations | None) -> None:
        self.cache = history
        self._invalidations = invalidations

    async def caught_up(self) -> None:
        if self._invalidations is not None:
            await self._invalidations.caught_up()

    async def read(self, query: RecommendQuery) -> tuple[list[str], int]:
        """(item ids oldest first, history version: 0 for an inline or unreadable one)."""
        if query.history:
            return list(query.history), 0
        try:
            return await self.cache.get_versioned(query.user_id)
        except DatabaseUnavailable:
            # The popularity fallback, flagged as such, rather than an error.
            log.warning("history of a user unavailable: serving the popularity fallback")
            return [], 0


class RecommendService:
    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        history: HistoryStage,
        eligibility: EligibilityPolicy,
        encoder: Encoder,
        ranker: Ranker,
        exploration: ExplorationSlots,
        explainer: Explainer,
        measurement: Measurement,
        catalogue: Catalogue,
        rules: RuleBook,
        shown: ShownLog,
    ) -> None:
        self.rules = rules
        self.shown = shown
        self.settings = settings
        self.registry = registry
        self.history = history
        self.eligibility = eligibility
        self.encoder = encoder
        self.ranker = ranker
        self.exploration = exploration
        self.explainer = explainer
        self.measurement = measurement
        self.catalogue = catalogue

    async def recommend(self, query: RecommendQuery) -> Recommendation:
        started = time.perf_counter()
        k = validate_query(self.settings, query)
        result, basis, eligible = await self._serve(query, k, started)
        await self._finish(query, k, result, eligible)
        if query.include_titles:
            result.titles = await self.catalogue.titles([item for item, _ in result.items])
        if query.explain and basis is not None:
            mark = time.perf_counter()
            await self.explainer.explain(result, basis.model, basis.seen)
            STAGES["explain"].observe(time.perf_counter() - mark)
        return result

    async def recommend_many(self, queries: Sequence[RecommendQuery]) -> list[Recommendation]:
        """RecommendBatch: every query validated first, then all served concurrently (the
        batcher runs their models together), admitted or refused as a whole."""
        started = time.perf_counter()
        ks = validate_batch(self.settings, queries)
        explained = sum(1 for query in queries if query.explain)
        model = self.registry.current
        if model is not None:
            # The whole call, or none of it; an explained request at its full cost.
            model.batcher.admit(len(queries) + explained * (self.settings.explain_events + 1))
        admitted = ADMITTED.set(True)
        try:
            served = await asyncio.gather(
                *(self._serve(q, k, started) for q, k in zip(queries, ks, strict=True))
            )
            results = [result for result, _, _ in served]
            wanted = [r for q, r in zip(queries, results, strict=True) if q.include_titles]
            if wanted:
                titles = await self.catalogue.titles([i for r in wanted for i, _ in r.items])
                for result in wanted:
                    result.titles = {item: titles[item] for item, _ in result.items}
            for query, k, (result, _, eligible) in zip(queries, ks, served, strict=True):
                await self._finish(query, k, result, eligible)
            to_explain = [
                (result, basis)
                for query, (result, basis, _) in zip(queries, served, strict=True)
                if query.explain and basis is not None
            ]
            if to_explain:
                await asyncio.gather(
                    *(self.explainer.explain(r, b.model, b.seen) for r, b in to_explain)
                )
        finally:
            ADMITTED.reset(admitted)
        return results

    async def _serve(
        self, query: RecommendQuery, k: int, started: float
    ) -> tuple[Recommendation, Basis | None, Eligible]:
        """resolve -> history -> candidates -> score -> rank, for one validated query."""
        mark = time.perf_counter()
        STAGES["validate"].observe(mark - started)
        model, _ = self.registry.model_for(query.user_id)
        await self.eligibility.prepare(model, query)
        steer = self.rules.plan(query)
        if steer is not None:
            await steer.prepare(model)
        STAGES["resolve"].observe(time.perf_counter() - mark)
        mark = time.perf_counter()
        encoding = None
        items: list[str] | None = None
        version = 0
        if not query.history:
            await self.history.caught_up()
            if model is not None:
                encoding = await self.encoder.cached(model, query.user_id)
        if encoding is None:
            items, version = await self.history.read(query)
        STAGES["history"].observe(time.perf_counter() - mark)
        seen_ids = items if items is not None else lambda: self._peek(query.user_id)
        shown_out = await self._shown_out(query)
        eligible = self.eligibility.for_request(query, seen_ids, self._negatives(query), shown_out)
        if model is None:
            ranked = self.ranker.without_model(eligible, k, steer)
            result = Recommendation(ranked, 0, "popularity", 0)
            return self._pinned(result, steer, eligible, k), None, eligible
        mark = time.perf_counter()
        if encoding is None:
            assert items is not None
            seen = known_rows(model, items)
            if not seen.size:
                ranked = self.ranker.by_popularity(model, eligible, k, steer)
                result = Recommendation(ranked, model.version, "popularity", 0)
                result = self._pinned(result, steer, eligible, k)
                STAGES["rank"].observe(time.perf_counter() - mark)
                return result, None, eligible
            encoding = await self.encoder.encode(model, query.user_id, version, seen)
        now = time.perf_counter()
        STAGES["score"].observe(now - mark)
        ranked = self.ranker.by_model(model, encoding, eligible, k, steer)
        used = min(int(encoding.seen.size), model.bundle.config.max_len)
        result = self._pinned(
            Recommendation(ranked, model.version, "model", used), steer, eligible, k
        )
        STAGES["rank"].observe(time.perf_counter() - now)
        return result, Basis(model, encoding.seen), eligible

    @staticmethod
    def _pinned(
        result: Recommendation, steer: Steering | None, eligible: Eligible, k: int
    ) -> Recommendation:
        """The rules' last step, pins; the rules' effects go with the answer."""
        if steer is not None:
            result.items = steer.pin(result.items, k, eligible.allows)
            result.rule_effects = steer.effects
        return result

    def _negatives(self, query: RecommendQuery) -> Callable[[], Set[str]]:
        """The stored user's negative items (an inline history is a session's own)."""
        if query.history:
            return frozenset
        return lambda: self.history.cache.negatives(query.user_id)

    async def _shown_out(self, query: RecommendQuery) -> frozenset[str]:
        """The items shown-item capping leaves out of this user's list."""
        cap, window_s = self.shown.limits(query.shown_cap, query.shown_window_hours)
        if not cap or not query.user_id:
            return frozenset()
        return await self.shown.capped(
            query.user_id, cap, window_s, lambda: self._last_events(query)
        )

    def _last_events(self, query: RecommendQuery) -> dict[str, float]:
        """Per item, the user's newest event time (a session's inline history has none)."""
        found = None if query.history else self.history.cache.peek_events(query.user_id)
        newest: dict[str, float] = {}
        for when, item in found[0] if found else ():
            if when > newest.get(item, -1.0):
                newest[item] = when
        return newest

    def _peek(self, user_id: str) -> list[str]:
        cached = self.history.cache.peek(user_id)
        return cached[0] if cached else []

    async def _finish(
        self, query: RecommendQuery, k: int, result: Recommendation, eligible: Eligible
    ) -> None:
        """The exploration slot, then the answer is named and its impression logged."""
        mark = time.perf_counter()
        await self.exploration.place(result, eligible, k)
        self.measurement.record(query, k, result)
        if result.items and query.user_id:
            self.shown.record(query.user_id, result.recommendation_id, [i for i, _ in result.items])
        STAGES["respond"].observe(time.perf_counter() - mark)


class FeedbackService:
    """Feedback: validate, group-commit (acknowledged only after its commit), append to
    the cached histories, re-encode returning users in the background."""

    def __init__(
        self,
        settings: ServerSettings,
        writer: FeedbackWriter,
        history: HistoryCache,
        registry: ModelRegistry,
        prewarm: Prewarm,
        background: BackgroundTasks,
        refresh_states: bool,
        negative: Callable[[str, float], bool] | None = None,
    ) -> None:
        self.negative = negative
        self.settings = settings
        self.writer = writer
        self.history = history
        self.registry = registry
        self.prewarm = prewarm
        self.background = background
        self.refresh_states = refresh_states

    async def feedback(self, events: Sequence[FeedbackEventIn]) -> FeedbackResult:
        rows = validate_events(self.settings, events)
        stored, refused = await self.writer.write(rows)
        touched: set[str] = set()
        # The first of repeated ids is the one stored (as in the database), so a repeat
        # naming another user never reaches that user's cached history.
        for row in first_per_event_id(rows):
            if row.event_id in stored:
                negative = self.negative is not None and self.negative(row.kind, row.value)
                when = row.event_time.timestamp()
                self.history.append(row.user_id, row.item_id, when, negative=negative)
                touched.add(row.user_id)
        if touched and self.refresh_states:
            self.background.run(
                self.prewarm.refresh(self.registry.current, touched), "refresh-states"
            )
        duplicates = len(rows) - len(stored) - len(refused)
        return FeedbackResult(len(stored), duplicates, stored, len(refused))
