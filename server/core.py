"""The serving core: Recommend and Feedback as plain domain calls (no gRPC here).

Recommend: validate -> history (inline, or the cached stored history) -> map item ids
to model rows (unknown items skipped, newest max_len kept) -> batched model run ->
mask seen, excluded and unavailable items, restrict to candidates -> top k. A user
with no usable history gets the popularity fallback, and the result says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from server import metrics
from server.batcher import ADMITTED, timed
from server.catalogue import Catalogue
from server.feedback import FeedbackWriter
from server.history import Entry, HistoryCache
from server.impressions import ImpressionLog
from server.invalidation import Invalidations
from server.registry import Arm, ModelRegistry, ServingModel, arm_name
from server.state_cache import StateCache, UserState
from shared.config import ServerSettings
from shared.errors import DatabaseUnavailable, InvalidArgument, Overloaded, Unavailable
from shared.explain import (
    candidate_offset,
    leave_one_out_variants,
    support_weights,
    top_support,
)
from shared.histories import left_pad
from shared.ingest import EventRow, first_per_event_id
from shared.models import utcnow
from shared.rerank import debias

log = logging.getLogger(__name__)
MAX_ID_LEN = 256
MAX_EVENT_ID_LEN = 128
MAX_RECOMMENDATION_ID_LEN = 64
MAX_LABEL_FILTERS = 100
MAX_LABEL_LEN = 64
DEFAULT_K = 10
KIND_PATTERN = re.compile(r"^[a-z0-9_]{1,32}$")
FUTURE_SLACK_MS = 86_400_000
WARM_RUN_S = 0.005
"""How long one pre-encoding run before a hot swap may hold the model (warm_states)."""
WARM_SHARE = 0.25
"""The most of the time pre-encoding before a hot swap takes, in the model's idle gaps:
at a half (the model's whole idle time, or a run for every pause), Feedback commits and
the event loop starved for cores during swaps on 2 cores (Feedback p99 235 ms against
31 ms without a swap, at 271 requests/s)."""


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    k: int = 0
    history: Sequence[str] = ()
    exclude_item_ids: Sequence[str] = ()
    candidate_item_ids: Sequence[str] = ()
    allow_seen: bool = False
    include_titles: bool = False
    explain: bool = False
    include_labels: Sequence[str] = ()
    exclude_labels: Sequence[str] = ()


class Computed(NamedTuple):
    """An in-flight encoding of one user's history: state, scores (when the run computed
    them) and the history's model rows."""

    state: np.ndarray
    scores: np.ndarray | None
    rows: np.ndarray


@dataclass
class Recommendation:
    items: list[tuple[str, float]]
    model_version: int
    source: str  # "model" | "popularity"
    history_used: int = 0
    titles: dict[str, str] = field(default_factory=dict)
    """Catalogue titles of the items, when the query asked for them."""
    recommendation_id: str = ""
    """Names the served list in the impression log (empty: not logged)."""
    arm: str = ""
    """The experiment arm that served it ("" without a traffic split)."""
    explored: set[str] = field(default_factory=set)
    """Items placed by the exploration slot."""
    explanations: dict[str, list[Support]] = field(default_factory=dict)
    """Per item, the history events that support it, when the query asked for them."""
    basis: tuple[ServingModel, np.ndarray] | None = field(default=None, repr=False)
    """The model and the history's model rows that ranked the items (kept only when the
    query asked for explanations)."""


class Support(NamedTuple):
    """A history event supporting a recommended item (see shared/explain.py)."""

    item_id: str
    title: str
    weight: float
    events_ago: int


@dataclass(frozen=True)
class FeedbackEventIn:
    event_id: str
    user_id: str
    item_id: str
    kind: str = ""
    value: float = 0.0
    timestamp_ms: int = 0
    recommendation_id: str = ""


@dataclass
class FeedbackResult:
    stored: int
    duplicates: int
    stored_ids: set[str] = field(default_factory=set)


def check_id(field_name: str, value: str, max_len: int = MAX_ID_LEN) -> None:
    """An id: 1..max_len printable characters. Control characters (NUL included), format
    characters (bidirectional overrides, zero-width joiners) and separators other than
    the plain space are refused: they break storage, logs and what an operator reads."""
    if not value:
        raise InvalidArgument(
            field_name, f"is required: a non-empty string of 1..{max_len} characters"
        )
    if len(value) > max_len:
        raise InvalidArgument(
            field_name, f"is {len(value)} characters long; at most {max_len} are accepted"
        )
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidArgument(
            field_name,
            f"contains the character U+{ord(bad):04X} at position {value.index(bad)}; "
            "accepted: printable characters only (no control, format or bidi characters)",
        )


MAX_EPOCH_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last millisecond a stored time can hold."""


def check_epoch_ms(field_name: str, value: int, *, zero: str) -> None:
    """A time in Unix epoch milliseconds between 1970 and the end of 9999 (``zero``: what
    0 means for this field)."""
    if not 0 <= value <= MAX_EPOCH_MS:
        raise InvalidArgument(
            field_name,
            f"is {value}; accepted: Unix epoch milliseconds from 0 (1970-01-01) to "
            f"{MAX_EPOCH_MS} (9999-12-31), 0 meaning {zero}",
        )


def _check_list(field_name: str, values: Sequence[str], limit: int) -> None:
    if len(values) > limit:
        raise InvalidArgument(
            field_name, f"has {len(values)} entries; at most {limit} are accepted"
        )
    if not values:
        return
    lengths = list(map(len, values))  # C-level passes; name the culprit only on failure
    if min(lengths) == 0 or max(lengths) > MAX_ID_LEN or not all(map(str.isprintable, values)):
        for i, value in enumerate(values):
            check_id(f"{field_name}[{i}]", value)


class RecommendationCore:
    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        history: HistoryCache,
        writer: FeedbackWriter,
        executor: Executor,
        catalogue: Catalogue,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.history = history
        self.writer = writer
        self.executor = executor
        self.catalogue = catalogue
        self.states = StateCache(0 if settings.naive else settings.state_cache_users)
        self._inflight: dict[tuple[str, int, int], asyncio.Future[Computed]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._incoming: _Staging | None = None
        """States being encoded for the model a hot swap is about to serve."""
        self.impressions: ImpressionLog | None = None
        """Where served lists are logged (None: impression logging is off)."""
        self.invalidations: Invalidations | None = None
        """Other replicas' Feedback, when this process listens for it: a Recommend first
        waits (briefly) for notifications already on their way."""

    # --- Recommend ----------------------------------------------------------------------

    def validate_query(self, query: RecommendQuery) -> int:
        """Checks every field; returns the effective k."""
        s = self.settings
        if query.history:
            if len(query.user_id) > MAX_ID_LEN:
                check_id("user_id", query.user_id)
        else:
            check_id("user_id", query.user_id)
        k = query.k or DEFAULT_K
        if not 1 <= k <= s.max_k:
            raise InvalidArgument(
                "k", f"is {query.k}; accepted: 1..{s.max_k} (0 means {DEFAULT_K})"
            )
        _check_list("history", query.history, s.max_history_items)
        _check_list("exclude_item_ids", query.exclude_item_ids, s.max_list_items)
        _check_list("candidate_item_ids", query.candidate_item_ids, s.max_list_items)
        for name in ("include_labels", "exclude_labels"):
            labels: Sequence[str] = getattr(query, name)
            if len(labels) > MAX_LABEL_FILTERS:
                raise InvalidArgument(
                    name, f"has {len(labels)} labels; at most {MAX_LABEL_FILTERS} are accepted"
                )
            for i, label in enumerate(labels):
                check_id(f"{name}[{i}]", label, MAX_LABEL_LEN)
        return k

    async def recommend(self, query: RecommendQuery) -> Recommendation:
        k = self.validate_query(query)
        result = await self._serve(query, k)
        if self.settings.exploration_slots:
            await self._explore(query, k, result)
        self._measure(query, k, result)
        if query.include_titles:
            result.titles = await self.catalogue.titles([item for item, _ in result.items])
        if query.explain:
            await self._explain(result)
        return result

    async def _explore(self, query: RecommendQuery, k: int, result: Recommendation) -> None:
        """The exploration slot: the last ``exploration_slots`` places of the list go to
        items new since the model was trained (the most recently popular the user has not
        seen, passing the request's exclusions, candidates and label filters). Each takes
        the score of the item whose place it took, so the list stays sorted."""
        slots = self.settings.exploration_slots
        if result.source not in ("model", "popularity"):
            return
        model = self.registry.loaded(result.model_version)
        if model is None:
            return
        new = await self.catalogue.new_items(model.version, model.rows)
        if not new:
            return
        blocked = set(query.exclude_item_ids)
        if not query.allow_seen:
            cached = None if query.history else self.history.peek(query.user_id)
            blocked.update(query.history or (cached[0] if cached else ()))
        candidates = set(query.candidate_item_ids)
        include, exclude = frozenset(query.include_labels), frozenset(query.exclude_labels)
        picks: list[str] = []
        for item in new:
            if len(picks) == min(slots, k):
                break
            if item in blocked or (candidates and item not in candidates):
                continue
            if (include or exclude) and not self.catalogue.has_labels(item, include, exclude):
                continue
            picks.append(item)
        if not picks:
            return
        keep = min(len(result.items), k - len(picks))
        scores = [score for _, score in result.items]
        floor = scores[keep - 1] if keep else (scores[0] if scores else 0.0)
        placed = [
            (item, scores[keep + n] if keep + n < len(scores) else floor)
            for n, item in enumerate(picks)
        ]
        result.items = result.items[:keep] + placed
        result.explored = set(picks)

    def _measure(self, query: RecommendQuery, k: int, result: Recommendation) -> None:
        """Names the answer and logs its impression (off the request path); when a shadow
        candidate samples this request, the impression is logged once the shadow has
        ranked it too. The answer itself is final here: the shadow never changes it."""
        impressions = self.impressions
        if impressions is None or not result.items:
            return
        # The arm is the version that served (Arm.name), not a second hash of the user.
        result.arm = arm_name(result.model_version) if self.registry.arms else ""
        result.recommendation_id = impressions.new_id()
        shadow = self.registry.shadow
        if shadow is not None and random.random() < shadow.weight:
            self._background(self._shadow(shadow, query, k, result), "shadow")
            return
        impressions.record(
            result.recommendation_id,
            query.user_id,
            [item for item, _ in result.items],
            result.model_version,
            result.arm,
        )

    async def _shadow(
        self, shadow: Arm, query: RecommendQuery, k: int, served: Recommendation
    ) -> None:
        """Ranks a served request with the shadow candidate (its own batcher, the same
        history and masks) and logs the impression with the overlap and the time."""
        assert self.impressions is not None
        served_at = utcnow()
        listed = [item for item, _ in served.items]
        started = time.perf_counter()
        try:
            model = shadow.model
            if query.history:
                items = list(query.history)
            else:
                items = await self.history.get(query.user_id)
            seen = self._known_rows(model, items)
            if seen.size:
                encoded = await model.batcher.submit(seen[-model.bundle.config.max_len :])
                scores = encoded.scores
                if scores is None:
                    scores = model.bundle.item_embeddings @ encoded.state
                else:
                    scores = scores.copy()
                ranked = self._rank(model, scores, query, seen, k, "model", 0)
            else:
                ranked = self._rank(model, model.popularity.copy(), query, seen, k, "", 0)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            theirs = {item for item, _ in ranked.items[: len(listed)]}
            overlap = len(theirs.intersection(listed)) / len(listed)
            shadowed: tuple[int, float, float] | None = (shadow.version, overlap, elapsed_ms)
        except Exception as exc:  # the shadow is measurement: it never fails a request
            log.warning("shadow version %s could not rank a request: %s", shadow.version, exc)
            shadowed = None
        self.impressions.record(
            served.recommendation_id,
            query.user_id,
            listed,
            served.model_version,
            served.arm,
            served_at=served_at,
            shadow=shadowed,
        )

    async def recommend_many(self, queries: Sequence[RecommendQuery]) -> list[Recommendation]:
        """RecommendBatch: every query validated first (an error names
        ``requests[i].field``), then all served concurrently, so the batcher runs their
        models together."""
        limit = self.settings.max_batch_requests
        if not queries:
            raise InvalidArgument("requests", f"is empty; accepted: 1..{limit} requests")
        if len(queries) > limit:
            raise InvalidArgument(
                "requests", f"has {len(queries)} entries; at most {limit} are accepted"
            )
        explained = sum(1 for query in queries if query.explain)
        if explained > self.settings.max_explained_per_call:
            raise InvalidArgument(
                "requests",
                f"ask for explanations in {explained} requests; at most "
                f"{self.settings.max_explained_per_call} per call are accepted "
                "(server.max_explained_per_call): split the call",
            )
        ks = []
        for i, query in enumerate(queries):
            try:
                ks.append(self.validate_query(query))
            except InvalidArgument as exc:
                raise InvalidArgument(f"requests[{i}].{exc.field}", exc.description) from exc
        model = self.registry.current
        if model is not None and not self.settings.naive:
            # The whole call, or none of it; an explained request at its full cost.
            model.batcher.admit(len(queries) + explained * (self.settings.explain_events + 1))
        admitted = ADMITTED.set(True)
        try:
            results = list(await asyncio.gather(*map(self._serve, queries, ks)))
        finally:
            ADMITTED.reset(admitted)
        wanted = [r for q, r in zip(queries, results, strict=True) if q.include_titles]
        if wanted:
            titles = await self.catalogue.titles([i for r in wanted for i, _ in r.items])
            for result in wanted:
                result.titles = {item: titles[item] for item, _ in result.items}
        for query, k, result in zip(queries, ks, results, strict=True):
            if self.settings.exploration_slots:
                await self._explore(query, k, result)
            self._measure(query, k, result)
        to_explain = [r for q, r in zip(queries, results, strict=True) if q.explain]
        if to_explain:
            admitted = ADMITTED.set(True)  # priced in the call's admission above
            try:
                await asyncio.gather(*map(self._explain, to_explain))
            finally:
                ADMITTED.reset(admitted)
        return results

    async def _explain(self, result: Recommendation) -> None:
        """Fills result.explanations by leave-one-out through the model that ranked it
        (shared/explain.py): one model run over the history with each event left out."""
        if result.basis is None or not result.items:
            return
        model, seen = result.basis
        history = seen[-model.bundle.config.max_len :]
        newest = self.settings.explain_events
        # One sequence per explained event plus the whole history: admitted at that cost.
        variants = leave_one_out_variants(history, newest)
        states = await model.batcher.run_beside(model.backend.encode, variants)
        rows = np.fromiter((model.rows[item] for item, _ in result.items), np.int64)
        weights = support_weights(states, model.bundle.item_embeddings[rows])
        vocab = model.bundle.vocab
        offset = candidate_offset(history, newest)
        picked = top_support(weights, self.settings.explain_top, offset)
        events = {vocab[history[j] - 1] for support in picked for j, _ in support}
        titles = await self.catalogue.titles(sorted(events))
        for (item, _), support in zip(result.items, picked, strict=True):
            result.explanations[item] = [
                Support(vocab[history[j] - 1], titles[vocab[history[j] - 1]], w, len(history) - j)
                for j, w in support
            ]

    async def _serve(self, query: RecommendQuery, k: int) -> Recommendation:
        """A validated query with its effective k, by the model of the user's arm."""
        model, _ = self.registry.model_for(query.user_id)
        await self._prepare_labels(model, query)
        if query.history:
            items, history_version = list(query.history), 0
        else:
            if self.invalidations is not None:
                await self.invalidations.caught_up()
            if model is not None:
                # A returning user whose history has not changed since the last call: the
                # cached state and seen rows; no history copy, no id mapping, no model run.
                # Right after a Feedback, the re-encoding it started is awaited instead.
                version = self.history.cached_version(query.user_id)  # 0: not cached
                hit = self.states.get(query.user_id, model.version, version)
                if hit is not None:
                    return self._score(model, hit.state, None, query, hit.seen, k)
                pending = self._inflight.get((query.user_id, model.version, version))
                if version and pending is not None:
                    state, scores, seen = await asyncio.shield(pending)
                    shared = None if scores is None else scores.copy()  # others use it too
                    return self._score(model, state, shared, query, seen, k)
            try:
                items, history_version = await self.history.get_versioned(query.user_id)
            except DatabaseUnavailable:
                # The user's history cannot be read: popularity, flagged as the fallback,
                # rather than an error (the response says which it is).
                log.warning("history of a user unavailable: serving the popularity fallback")
                items, history_version = [], 0
            model, _ = self.registry.model_for(query.user_id)
            await self._prepare_labels(model, query)
        if model is None:
            return self._fallback_without_model(query, items, k)
        seen = self._known_rows(model, items)
        if not seen.size:
            return self._rank(model, model.popularity.copy(), query, seen, k, "popularity", 0)
        if history_version:
            # A history read again unchanged (an expired cache entry) keeps its state.
            kept = self.states.adopt(
                query.user_id, model.version, history_version, seen, model.bundle.config.max_len
            )
            if kept is not None:
                return self._score(model, kept.state, None, query, kept.seen, k)
        state, scores = await self._state(model, query.user_id, history_version, seen)
        return self._score(model, state, scores, query, seen, k)

    async def _prepare_labels(self, model: ServingModel | None, query: RecommendQuery) -> None:
        if model is not None and (query.include_labels or query.exclude_labels):
            labels = [*query.include_labels, *query.exclude_labels]
            await self.catalogue.prepare_labels(model.version, model.rows, labels)

    def _score(
        self,
        model: ServingModel,
        state: np.ndarray,
        scores: np.ndarray | None,
        query: RecommendQuery,
        seen: np.ndarray,
        k: int,
    ) -> Recommendation:
        """Ranks for ``state``; ``scores`` (float32 [N+1], this request's own copy) when the
        model run computed them, else they are computed here."""
        used = min(int(seen.size), model.bundle.config.max_len)
        result: Recommendation | None = None
        debiasing = self.settings.popularity_debias
        if (
            scores is None
            and model.index is not None
            and not query.candidate_item_ids
            and not query.include_labels
            and not query.exclude_labels
            and not debiasing
        ):
            ranked = self._rank_with_index(model, state, query, seen, k)
            if ranked is not None:
                result = Recommendation(ranked, model.version, "model", used)
        if result is None:
            if scores is None:
                scores = model.bundle.item_embeddings @ state  # [N+1, D] @ [D] -> [N+1]
            if debiasing:
                scores = debias(scores, model.log_share, debiasing)
            result = self._rank(model, scores, query, seen, k, "model", used)
        if query.explain:
            result.basis = (model, seen)
        return result

    @staticmethod
    def _rank_with_index(
        model: ServingModel, state: np.ndarray, query: RecommendQuery, seen: np.ndarray, k: int
    ) -> list[tuple[str, float]] | None:
        """The top k from the model's item index: it is asked for k plus as many rows as
        the masks could remove, and the masked rows are dropped. None (score every item
        instead) when the masks are too many to over-fetch or too few rows survive."""
        assert model.index is not None
        rows = model.rows
        banned = [model.unavailable_rows]
        if not query.allow_seen:
            banned.append(seen)
        if query.exclude_item_ids:
            banned.append(np.asarray([rows[i] for i in query.exclude_item_ids if i in rows]))
        masked = np.unique(np.concatenate(banned).astype(np.int64))
        if len(masked) > INDEX_MAX_MASKED:
            return None
        found, scores = model.index.search(state[None], k + len(masked))
        keep = (found[0] > 0) & ~np.isin(found[0], masked)
        picked, picked_scores = found[0][keep][:k], scores[0][keep][:k]
        if len(picked) < min(k, model.index.meta.items - len(masked)):
            return None  # the probed lists held too few: score every item
        vocab = model.bundle.vocab
        return [(vocab[r - 1], float(s)) for r, s in zip(picked, picked_scores, strict=True)]

    @staticmethod
    def _known_rows(model: ServingModel, items: Sequence[str]) -> np.ndarray:
        """Model rows of the history's items that the model knows, oldest first."""
        # map(dict.get) runs in C; unknown items come back as row 0 and are dropped.
        known = np.fromiter(map(model.rows.get, items, repeat(0)), dtype=np.int64, count=len(items))
        return known[known > 0]

    async def _state(
        self, model: ServingModel, user_id: str, history_version: int, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The user state [D] and, when the run computed them, the scores [N+1] (this
        request's own array), after a state-cache miss: an in-flight computation of the
        same (user, model, history), or a batched model run. ``seen``: the history's known
        rows, oldest first; the model reads the newest max_len of them."""
        used = seen[-model.bundle.config.max_len :]
        if self.settings.naive:
            loop = asyncio.get_running_loop()
            states, seconds = await loop.run_in_executor(
                self.executor, timed, model.backend.encode, used[None]
            )
            self.registry.record_batch(1, seconds)
            return states[0], None
        if not history_version:
            encoded = await model.batcher.submit(used)
            return encoded.state, encoded.scores
        computed = self._compute(model, user_id, history_version, seen)
        state, scores, _ = await asyncio.shield(computed)
        # The computation may serve several requests: each ranks its own copy.
        return state, None if scores is None else scores.copy()

    def _compute(
        self, model: ServingModel, user_id: str, history_version: int, seen: np.ndarray
    ) -> asyncio.Future[Computed]:
        key = (user_id, model.version, history_version)
        pending = self._inflight.get(key)
        if pending is not None:
            return pending
        future = asyncio.ensure_future(self._encode(model, seen))
        self._inflight[key] = future

        def store(done: asyncio.Future[Computed]) -> None:
            self._inflight.pop(key, None)
            if not done.cancelled() and done.exception() is None:
                state, _, rows = done.result()
                self.states.put(user_id, model.version, history_version, UserState(state, rows))

        future.add_done_callback(store)
        return future

    @staticmethod
    async def _encode(model: ServingModel, seen: np.ndarray) -> Computed:
        """One batched model run over the newest max_len of ``seen``."""
        encoded = await model.batcher.submit(seen[-model.bundle.config.max_len :])
        return Computed(encoded.state, encoded.scores, seen)

    async def warm_states(self, model: ServingModel) -> int:
        """Before ``model`` starts serving (a hot swap): encodes with it the most recently
        served users whose histories are in memory (at most swap_warm_users), and stores
        their states for it. Without this, every returning user misses the state cache at
        the same moment and the model queue overflows.

        The encoding yields to serving: each run takes a run slot of the outgoing model's
        batcher only while no request waits for the model (DynamicBatcher.run_when_idle),
        holds as many histories as the outgoing model's recent runs say take WARM_RUN_S,
        so a request that arrives meanwhile waits at most that long, and is followed by a
        rest that keeps the encoding to WARM_SHARE of the time. After swap_warm_s the swap
        goes ahead with the users encoded so far. Entries go into the cache only at the
        end, when the caller swaps without yielding, so the outgoing model keeps its own
        entries until then; a user whose history changes meanwhile simply misses (the
        history version differs). Returns the number of users encoded."""
        limit = self.settings.swap_warm_users
        outgoing = self.registry.current
        if self.settings.naive or not self.states.max_users or not limit or outgoing is None:
            return 0
        recent = self.states.recent(limit)
        run_size = outgoing.batcher.histories_within(WARM_RUN_S)
        deadline = time.monotonic() + self.settings.swap_warm_s
        staging = self._incoming = _Staging(model)
        try:
            for start in range(0, len(recent), run_size):
                if time.monotonic() > deadline:
                    log.warning(
                        "model version %s: %d of %d users encoded in swap_warm_s (%gs); swapping",
                        model.version,
                        len(staging.states),
                        len(recent),
                        self.settings.swap_warm_s,
                    )
                    break
                # Only the cached tuples are taken here; the items' rows are looked up with
                # the run, on the model's thread (for 6,000 users of 512 events that lookup
                # took 170 ms, and done here before the first run it stopped the event loop).
                chunk = [
                    (user_id, cached)
                    for user_id in recent[start : start + run_size]
                    if user_id not in staging.states
                    and (cached := self.history.peek_events(user_id)) is not None
                    and cached[1]
                ]
                if chunk:
                    encoded = await outgoing.batcher.run_when_idle(
                        partial(_encode_cached, model, chunk), share=WARM_SHARE
                    )
                    for user_id, version, entry in encoded:
                        staging.keep(user_id, version, entry)
        finally:
            self._incoming = None
        order = {user_id: n for n, user_id in enumerate(recent)}
        staged = sorted(staging.states.items(), key=lambda kv: order.get(kv[0], -1), reverse=True)
        for user_id, (version, entry) in staged:  # the most recent ends up last
            self.states.put(user_id, model.version, version, entry)
        return len(staged)

    async def _refresh_states(self, user_ids: set[str]) -> None:
        """After Feedback: re-encode returning users in the background, so their next
        Recommend costs only the scoring."""
        model = self.registry.current
        if model is None:
            return
        for user_id in user_ids:
            if not (self.states.has(user_id) and self.history.is_cached(user_id)):
                continue
            items, version = await self.history.get_versioned(user_id)
            seen = self._known_rows(model, items)
            if seen.size and version:
                self._compute(model, user_id, version, seen)
            incoming = self._incoming
            if incoming is not None and version:
                # A hot swap is being prepared: its model's state goes stale too. Encoded
                # now, it is ready at the swap instead of missing then with the many others
                # that changed during the pre-encoding (which takes seconds under load).
                seen = self._known_rows(incoming.model, items)
                if seen.size:
                    self._background(incoming.refresh(user_id, version, seen), "refresh-incoming")

    def _rank(
        self,
        model: ServingModel,
        scores: np.ndarray,
        query: RecommendQuery,
        seen: np.ndarray,
        k: int,
        source: str,
        used: int,
    ) -> Recommendation:
        """Masks and top-k over ``scores`` (float32 [N+1], modified in place)."""
        rows = model.rows
        scores[0] = -np.inf
        if not query.allow_seen:
            scores[seen] = -np.inf
        if query.exclude_item_ids:
            excluded = [rows[i] for i in query.exclude_item_ids if i in rows]
            scores[np.asarray(excluded, dtype=np.int64)] = -np.inf
        for label in query.exclude_labels:
            scores[self.catalogue.label_rows(model.version, rows, label)] = -np.inf
        if query.include_labels:
            carrying = [
                self.catalogue.label_rows(model.version, rows, x) for x in query.include_labels
            ]
            allowed = np.unique(np.concatenate(carrying))
            restricted = np.full_like(scores, -np.inf)
            restricted[allowed] = scores[allowed]
            scores = restricted
        if model.unavailable_rows.size:
            scores[model.unavailable_rows] = -np.inf
        if query.candidate_item_ids:
            allowed = np.asarray([rows[i] for i in query.candidate_item_ids if i in rows], np.int64)
            restricted = np.full_like(scores, -np.inf)
            restricted[allowed] = scores[allowed]
            scores = restricted
        top = top_k(scores, k)
        vocab = model.bundle.vocab
        ranked = [(vocab[r - 1], float(scores[r])) for r in top]
        return Recommendation(ranked, model.version, source, used)

    def _fallback_without_model(
        self, query: RecommendQuery, items: Sequence[str], k: int
    ) -> Recommendation:
        fallback = self.registry.fallback
        if fallback is None:
            raise Unavailable(
                "no model is loaded and there is no feedback for a popularity fallback yet; "
                "send Feedback and train a model (StartTraining)"
            )
        banned = set(query.exclude_item_ids) | self.registry.unavailable
        if not query.allow_seen:
            banned |= set(items)
        candidates = set(query.candidate_item_ids)
        ranked = [
            (item, score)
            for item, score in fallback.items
            if item not in banned and (not candidates or item in candidates)
        ][:k]
        return Recommendation(ranked, 0, "popularity", 0)

    # --- other replicas' feedback --------------------------------------------------------

    def forget_users(self, user_ids: list[str]) -> None:
        """Another replica stored events for these users: their next Recommend here reads
        the database again."""
        metrics.INVALIDATIONS.inc()
        self.history.invalidate(user_ids)
        self.states.invalidate(user_ids)

    def forget_everyone(self) -> None:
        self.history.clear()
        self.states.clear()

    # --- Feedback -----------------------------------------------------------------------

    def validate_events(self, events: Sequence[FeedbackEventIn]) -> list[EventRow]:
        if not events:
            raise InvalidArgument("events", "is empty; send 1 or more events")
        limit = self.settings.max_feedback_batch
        if len(events) > limit:
            raise InvalidArgument("events", f"has {len(events)} events; at most {limit} per call")
        now_ms = int(time.time() * 1000)
        out: list[EventRow] = []
        for i, event in enumerate(events):
            where = f"events[{i}]"
            check_id(f"{where}.event_id", event.event_id, MAX_EVENT_ID_LEN)
            check_id(f"{where}.user_id", event.user_id)
            check_id(f"{where}.item_id", event.item_id)
            if event.recommendation_id:
                check_id(
                    f"{where}.recommendation_id", event.recommendation_id, MAX_RECOMMENDATION_ID_LEN
                )
            kind = event.kind or "click"
            if not KIND_PATTERN.match(kind):
                raise InvalidArgument(
                    f"{where}.kind", f"is {kind[:40]!r}; accepted: 1..32 characters of [a-z0-9_]"
                )
            if not math.isfinite(event.value):
                raise InvalidArgument(f"{where}.value", "must be a finite number")
            value = event.value or 1.0
            check_epoch_ms(f"{where}.timestamp_ms", event.timestamp_ms, zero="now")
            ts = event.timestamp_ms or now_ms
            if ts > now_ms + FUTURE_SLACK_MS:
                raise InvalidArgument(
                    f"{where}.timestamp_ms",
                    f"is {event.timestamp_ms}; accepted: Unix epoch milliseconds, at most one day "
                    "in the future (0 means now)",
                )
            out.append(
                EventRow(
                    event.event_id,
                    event.user_id,
                    event.item_id,
                    kind,
                    value,
                    datetime.fromtimestamp(ts / 1000.0, UTC),
                    event.recommendation_id or None,
                )
            )
        return out

    async def feedback(self, events: Sequence[FeedbackEventIn]) -> FeedbackResult:
        rows = self.validate_events(events)
        stored = await self.writer.write(rows)
        touched: set[str] = set()
        # The first of repeated ids is the one stored (as in the database), so a repeat
        # naming another user never reaches that user's cached history.
        for row in first_per_event_id(rows):
            if row.event_id in stored:
                self.history.append(row.user_id, row.item_id, row.event_time.timestamp())
                touched.add(row.user_id)
        if touched and self.states.max_users:
            self._background(self._refresh_states(touched), "refresh-states")
        return FeedbackResult(len(stored), len(rows) - len(stored), stored)

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Runs ``work`` as a task that is kept until it ends and whose failure is logged."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


INDEX_MAX_MASKED = 2048
"""Above this many masked rows (seen, excluded, unavailable) a request scores every item
rather than over-fetch from the item index."""


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest finite scores, best first, without a full sort. Masked
    entries (-inf) are never returned, so there may be fewer than k."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < scores.shape[0]:
        part = np.argpartition(scores, -k)[-k:]
    else:
        part = np.arange(scores.shape[0])
    order = np.argsort(-scores[part], kind="stable")
    best = part[order]
    picked = scores[best]
    if picked[-1] == -np.inf:  # fewer than k unmasked items: drop the masked ones
        best = best[picked > -np.inf]
    return best


@dataclass
class _Staging:
    """States for the model a hot swap is about to serve, kept out of the state cache
    until the swap (the outgoing model's entries serve until then)."""

    model: ServingModel
    states: dict[str, tuple[int, UserState]] = field(default_factory=dict)

    def keep(self, user_id: str, history_version: int, entry: UserState) -> None:
        """Keeps the state of the newer history (history versions only grow)."""
        held = self.states.get(user_id)
        if held is None or held[0] < history_version:
            self.states[user_id] = (history_version, entry)

    async def refresh(self, user_id: str, history_version: int, seen: np.ndarray) -> None:
        """Encodes a changed history with the incoming model (its own batcher: idle until
        the swap, and these runs teach it its costs before it serves)."""
        try:
            computed = await RecommendationCore._encode(self.model, seen)
        except Overloaded:
            return  # the user misses once after the swap, as without this
        self.keep(user_id, history_version, UserState(computed.state, seen))


def _encode_cached(
    model: ServingModel, chunk: list[tuple[str, tuple[tuple[Entry, ...], int]]]
) -> list[tuple[str, int, UserState]]:
    """A pre-encoding run (warm_states, on the model's thread): the cached histories'
    known rows, then one encoding of the newest max_len of each."""
    users = []
    for user_id, (events, version) in chunk:
        seen = RecommendationCore._known_rows(model, [item for _, item in events])
        if seen.size:
            users.append((user_id, version, seen))
    if not users:
        return []
    max_len = model.bundle.config.max_len
    states = model.backend.encode(left_pad([seen[-max_len:] for _, _, seen in users]))
    return [
        (user_id, version, UserState(state, seen))
        for (user_id, version, seen), state in zip(users, states, strict=True)
    ]
