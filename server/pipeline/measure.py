"""The respond stage's side effects: each non-empty answer is named (a random
recommendation id) and its impression logged off the request path (server/impressions.py);
when a shadow candidate samples the request, it ranks the same request through the same
stages and the impression is logged with the overlap and its time. The answer itself is
final before any of this: the shadow never changes it."""

from __future__ import annotations

import logging
import random
import time

from server.arms import Arm, arm_name
from server.history import HistoryCache
from server.impressions import ImpressionLog
from server.pipeline.eligibility import EligibilityPolicy
from server.pipeline.encoder import known_rows, run_model
from server.pipeline.rank import Ranker
from server.pipeline.request import Recommendation, RecommendQuery
from server.pipeline.tasks import BackgroundTasks
from server.registry import ModelRegistry
from shared.storage.tables import utcnow

log = logging.getLogger(__name__)


class Measurement:
    def __init__(
        self,
        impressions: ImpressionLog | None,
        registry: ModelRegistry,
        history: HistoryCache,
        eligibility: EligibilityPolicy,
        ranker: Ranker,
        background: BackgroundTasks,
    ) -> None:
        self._impressions = impressions
        self._registry = registry
        self._history = history
        self._eligibility = eligibility
        self._ranker = ranker
        self._background = background

    def record(self, query: RecommendQuery, k: int, result: Recommendation) -> None:
        impressions = self._impressions
        if impressions is None or not result.items:
            return
        # The arm is the version that served (Arm.name), not a second hash of the user.
        result.arm = arm_name(result.model_version) if self._registry.arms else ""
        result.recommendation_id = impressions.new_id()
        shadow = self._registry.shadow
        if shadow is not None and random.random() < shadow.weight:
            self._background.run(self._shadow(impressions, shadow, query, k, result), "shadow")
            return
        impressions.record(
            result.recommendation_id,
            query.user_id,
            [item for item, _ in result.items],
            result.model_version,
            result.arm,
            rules=result.rule_effects,
        )

    async def _shadow(
        self,
        impressions: ImpressionLog,
        shadow: Arm,
        query: RecommendQuery,
        k: int,
        served: Recommendation,
    ) -> None:
        """Ranks a served request with the shadow candidate (its own batcher, the same
        history and rule) and logs the impression with the overlap and the time."""
        served_at = utcnow()
        listed = [item for item, _ in served.items]
        started = time.perf_counter()
        try:
            model = shadow.model
            items = list(query.history) if query.history else await self._history.get(query.user_id)
            seen = known_rows(model, items)
            eligible = self._eligibility.for_request(query, items)
            await self._eligibility.prepare(model, query)
            if seen.size:
                encoding = await run_model(model, seen)
                ranked = self._ranker.by_model(model, encoding, eligible, k)
            else:
                ranked = self._ranker.by_popularity(model, eligible, k)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            theirs = {item for item, _ in ranked[: len(listed)]}
            overlap = len(theirs.intersection(listed)) / len(listed)
            shadowed: tuple[int, float, float] | None = (shadow.version, overlap, elapsed_ms)
        except Exception as exc:  # the shadow is measurement: it never fails a request
            log.warning("shadow version %s could not rank a request: %s", shadow.version, exc)
            shadowed = None
        impressions.record(
            served.recommendation_id,
            query.user_id,
            listed,
            served.model_version,
            served.arm,
            served_at=served_at,
            shadow=shadowed,
            rules=served.rule_effects,
        )
