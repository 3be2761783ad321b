"""The server's composition root: every component built once, in dependency order, each
given what it needs through its constructor. Nothing is wired after construction.

    settings -> engine, executors, stats, health
             -> history cache, state cache, encoder, pre-encoding      (the user's state)
             -> registry (pre-encoding before each hot swap, health on each change)
             -> catalogue, rule book, added items, eligibility policy, ranker, exploration,
                explainer
             -> feedback writer, impression log, invalidations (events and changes)
             -> request pipeline (RecommendService, FeedbackService)
             -> guard, servicers, admin, deployment

``Parts`` holds the few choices a benchmark baseline makes differently (bench/naive.py):
a production server uses its defaults.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from server import invalidation
from server.backends import create_backend
from server.catalogue import Catalogue
from server.feedback import FeedbackWriter
from server.history import HistoryCache
from server.impressions import ImpressionLog
from server.model_loader import BackendFactory, inflight_batches
from server.new_items import NewItems
from server.pipeline.eligibility import EligibilityPolicy
from server.pipeline.encoder import Encoder
from server.pipeline.explain import Explainer
from server.pipeline.explore import ExplorationSlots
from server.pipeline.measure import Measurement
from server.pipeline.prewarm import Prewarm
from server.pipeline.rank import Ranker
from server.pipeline.rules import RuleBook
from server.pipeline.service import FeedbackService, HistoryStage, RecommendService
from server.pipeline.shown import ShownLog
from server.pipeline.similar import SimilarItemsService
from server.pipeline.tasks import BackgroundTasks
from server.registry import ModelRegistry
from server.serving import ServingHealth
from server.state_cache import StateCache
from server.stats import ServerStats
from shared.config import Settings
from shared.storage.engine import engine_for

EncoderFactory = Callable[[HistoryCache, StateCache, ServerStats, ThreadPoolExecutor], Encoder]


def production_encoder(
    history: HistoryCache, states: StateCache, _stats: ServerStats, _runs: ThreadPoolExecutor
) -> Encoder:
    return Encoder(history, states)


@dataclass(frozen=True)
class Parts:
    """What a benchmark's baseline builds differently; the defaults are production's."""

    cache_histories: bool = True
    cache_states: bool = True
    group_commit: bool = True
    log_impressions: bool = True
    encoder: EncoderFactory = production_encoder


@dataclass
class Components:
    settings: Settings
    engine: Engine
    executor: ThreadPoolExecutor
    model_executor: ThreadPoolExecutor
    stats: ServerStats
    health: ServingHealth
    history: HistoryCache
    states: StateCache
    registry: ModelRegistry
    catalogue: Catalogue
    rules: RuleBook
    new_items: NewItems
    """Items added to the catalogue after training, taken on by models with properties."""
    forget_user: Callable[[str], None]
    """Drops everything this replica holds about a deleted user."""
    writer: FeedbackWriter
    impressions: ImpressionLog | None
    invalidations: invalidation.Invalidations
    listening: bool
    """Whether this process listens for other replicas' invalidations."""
    recommend: RecommendService
    feedback: FeedbackService
    similar: SimilarItemsService
    background: BackgroundTasks


def forgetting(
    history: HistoryCache, encoder: Encoder, shown: ShownLog, impressions: ImpressionLog | None
) -> Callable[[str], None]:
    """What a deleted user leaves on a replica, dropped: history, state and any encoding
    in flight, showings, impressions waiting to be written."""

    def forget_user(user_id: str) -> None:
        history.invalidate([user_id])
        encoder.forget([user_id])
        shown.drop(user_id)
        if impressions is not None:
            impressions.forget_user(user_id)

    return forget_user


def following(
    engine: Engine,
    origin: str,
    history: HistoryCache,
    encoder: Encoder,
    rules: RuleBook,
    shown: ShownLog,
    forget_user: Callable[[str], None],
    poll_s: float,
) -> invalidation.Invalidations:
    """The other replicas' invalidations: a user they stored events for is read again
    from the database on their next request here; a rule set change is loaded again."""

    def forget(user_ids: list[str]) -> None:
        history.invalidate(user_ids)
        encoder.forget(user_ids)

    def forget_all() -> None:
        history.clear()
        encoder.forget_everyone()
        shown.forget_everyone()

    def changed(topic: str, subject: str) -> None:
        if topic in ("rules", "*"):
            rules.changed()
        if topic == "shown":
            shown.forget(subject.split("\n"))
        if topic == "user_deleted":
            forget_user(subject)

    return invalidation.Invalidations(
        engine, origin=origin, forget=forget, forget_all=forget_all, poll_s=poll_s,
        changed=changed,
    )  # fmt: skip


def impression_log(
    settings: Settings, parts: Parts, engine: Engine, executor: ThreadPoolExecutor, origin: str
) -> ImpressionLog | None:
    server = settings.server
    if not (server.log_impressions and parts.log_impressions):
        return None
    return ImpressionLog(
        engine, executor, max_queued=server.max_queued_impressions,
        flush_s=server.impression_flush_ms / 1000.0,
        flush_rows=server.impression_flush_rows, origin=origin,
    )  # fmt: skip


def build(
    settings: Settings,
    *,
    backend_factory: BackendFactory = create_backend,
    parts: Parts = Parts(),
    background_checkpoints: bool = False,
) -> Components:
    """Every component of a server process, built once; none is started."""
    server = settings.server
    engine = engine_for(settings, background_checkpoints=background_checkpoints)
    # Database work and model runs on separate threads: a stalled database must not
    # stall the users answered from the caches.
    executor = ThreadPoolExecutor(server.db_threads, thread_name_prefix="recserve-db")
    model_executor = ThreadPoolExecutor(
        max(2, inflight_batches(server, "cpu") + server.lone_runs),
        thread_name_prefix="recserve-model",
    )
    stats = ServerStats()
    health = ServingHealth()
    history = HistoryCache(
        engine,
        executor,
        max_bytes=server.history_cache_max_bytes if parts.cache_histories else 0,
        ttl_s=server.history_ttl_s,
        negative=settings.events.negative,
    )
    states = StateCache(server.state_cache_users if parts.cache_states else 0)
    background = BackgroundTasks()
    encoder = parts.encoder(history, states, stats, model_executor)
    prewarm = Prewarm(server, encoder, background)
    registry = ModelRegistry(
        settings, engine, executor, model_executor, backend_factory,
        on_batch=stats.record_batch, on_change=health.model_changed, before_swap=prewarm.warm,
    )  # fmt: skip
    catalogue = Catalogue(
        engine,
        executor,
        poll_s=server.model_poll_s,
        exploration_window_h=server.exploration_window_h,
        label_cache_max_entries=server.label_cache_max_entries,
    )
    origin = uuid.uuid4().hex  # this process, in the invalidations it sends
    writer = FeedbackWriter(
        engine,
        max_events=server.feedback_commit_batch,
        group_commit=parts.group_commit,
        max_queued=server.max_queued_events,
        notify_channel=invalidation.CHANNEL if server.invalidation else None,
        origin=origin,
    )
    impressions = impression_log(settings, parts, engine, executor, origin)
    rules, shown = RuleBook(engine, executor, catalogue), ShownLog(engine, executor, server)
    new_items = NewItems(catalogue, registry, engine, executor, poll_s=server.model_poll_s)
    forget_user = forgetting(history, encoder, shown, impressions)
    invalidations = following(
        engine, origin, history, encoder, rules, shown, forget_user, server.invalidation_poll_s
    )
    listening = server.invalidation and (invalidations.mode == "notify" or server.workers > 1)
    eligibility = EligibilityPolicy(catalogue, registry)
    ranker = Ranker(server, registry)
    history_stage = HistoryStage(history, invalidations if listening else None)
    recommend = RecommendService(
        server,
        registry,
        history_stage,
        eligibility,
        encoder,
        ranker,
        ExplorationSlots(server.exploration_slots, catalogue, registry),
        Explainer(catalogue, newest=server.explain_events, top=server.explain_top),
        Measurement(impressions, registry, history, eligibility, ranker, background),
        catalogue,
        rules,
        shown,
    )
    feedback = FeedbackService(
        server, writer, history, registry, prewarm, background,
        refresh_states=bool(states.max_users), negative=settings.events.negative,
    )  # fmt: skip
    similar = SimilarItemsService(server, registry, history_stage, eligibility, ranker, catalogue)
    return Components(
        settings, engine, executor, model_executor, stats, health, history, states, registry,
        catalogue, rules, new_items, forget_user, writer, impressions, invalidations, listening,
        recommend, feedback, similar, background,
    )  # fmt: skip
