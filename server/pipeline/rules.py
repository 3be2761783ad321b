"""The rules step of the rank stage: business rules (shared/model/rules.py) applied to one
request's ranking, after eligibility and before the exploration slots.

- **RuleBook** is this replica's copy of the stored rule sets: loaded at start, loaded
  again when a change to them is announced (server/invalidation.py: NOTIFY on
  PostgreSQL, the change table polled otherwise), and every REFRESH_S as a safety net.
  Schedules are read at request time, so a set starts and stops on time with no reload.
- **Steering** applies one request's plan: boosts and buries move scores (log(factor)
  added to a logit, a popularity share multiplied by it), caps pick the list best first,
  pins put items in their slots. Every rule that moved an item is recorded as an
  effect: the audit kept with the impression, and ScoredItem.rules under ``explain``.

Rules never return an ineligible item: the scores they move are the eligibility rule's
masked ones (a banned row stays at -inf), and a pinned item is placed only if the rule
allows it. While any rule applies, every item is scored (the item index is not asked),
so a boosted item cannot be missed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from server.catalogue import Catalogue
from server.pipeline.request import RecommendQuery
from server.served_model import ServingModel
from shared.model.rules import PER_VALUE, Effect, Rule, RulePlan, RuleSet, Sourced
from shared.storage import rule_store
from shared.storage.engine import session_scope
from shared.storage.tables import utcnow

log = logging.getLogger(__name__)

REFRESH_S = 30.0
"""The safety net: rule sets are read again this often even without an announcement."""
REQUEST = "request"
PAST = {"boost": "boosted", "bury": "buried"}
MAX_EFFECTS = 200
"""The most effects one list records (caps can leave out many items on the way)."""
MAX_PROFILES = 1_000_000
"""The most items whose profile under one compiled plan is cached."""
Items = list[tuple[str, float]]


class RuleBook:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        catalogue: Catalogue,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalogue = catalogue
        self._engine = engine
        self._executor = executor
        self._clock = clock
        self._sets: tuple[RuleSet, ...] = ()
        self.loads = 0
        self._compiled: tuple[tuple[RuleSet, ...], Compiled] | None = None
        self._active: tuple[tuple[RuleSet, ...], datetime | None, datetime | None] | None = None
        """(the sets active, from, until): the answer of active() between two schedule
        boundaries, dropped when the sets change."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._refresh(), name="rule-book")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self.reload()

    async def reload(self) -> None:
        """Reads every rule set again; a failed read keeps the sets this replica has."""
        async with self._lock:  # reloads in order: the last one reads the newest state
            loop = asyncio.get_running_loop()
            try:
                sets = tuple(await loop.run_in_executor(self._executor, self._read))
                self.loads += 1
            except Exception as exc:
                log.warning("rule sets not reloaded (the last ones stay): %s", exc)
                return
            if sets != self.sets:  # unchanged sets keep their compiled plan
                self.sets = sets

    @property
    def sets(self) -> tuple[RuleSet, ...]:
        return self._sets

    @sets.setter
    def sets(self, sets: tuple[RuleSet, ...]) -> None:
        self._sets, self._active = sets, None

    def _read(self) -> list[RuleSet]:
        with session_scope(self._engine) as session:
            return rule_store.list_rule_sets(session)

    def changed(self) -> None:
        """A change was announced (called on the event loop): reload in the background."""
        asyncio.get_running_loop().create_task(self.reload())

    def active(self, now: datetime | None = None) -> tuple[RuleSet, ...]:
        """The sets within their schedule at ``now`` (the clock's time when not given);
        worked out again only when ``now`` crosses a set's start or end."""
        when = now or self._clock()
        found = self._active
        if (
            found is not None
            and (found[1] is None or when >= found[1])
            and (found[2] is None or when < found[2])
        ):
            return found[0]
        active = tuple(rule_set for rule_set in self.sets if rule_set.active(when))
        starts = [b for r in self.sets for b in (r.active_from, r.active_until) if b and b <= when]
        ends = [b for r in self.sets for b in (r.active_from, r.active_until) if b and b > when]
        self._active = (active, max(starts, default=None), min(ends, default=None))
        return active

    def plan(self, query: RecommendQuery) -> Steering | None:
        """The rules that apply to ``query`` (validated), or None when none does. The
        rule sets' part is compiled once per set of active rule sets and shared."""
        active = self.active() if self._sets and not query.skip_rule_sets else ()
        if not query.boost and not query.bury:
            if not active:
                return None
            found = self._compiled
            if found is None or (found[0] is not active and found[0] != active):
                found = self._compiled = (active, Compiled(_plan((), (), active)))
            return Steering(found[1], self._catalogue)
        return Steering(Compiled(_plan(query.boost, query.bury, active)), self._catalogue)


def _plan(
    boost: Sequence[tuple[str, float]],
    bury: Sequence[tuple[str, float]],
    sets: Sequence[RuleSet],
) -> RulePlan:
    plan = RulePlan()
    for label, factor in boost:
        plan.add(Rule("boost", label=label, factor=factor), REQUEST)
    for label, factor in bury:
        plan.add(Rule("bury", label=label, factor=factor), REQUEST)
    for rule_set in sets:
        for rule in rule_set.rules:
            plan.add(rule, f"rule set {rule_set.name}")
    return plan


Profile = tuple[tuple[int, ...], tuple[int, ...]]
"""An item under a plan: the cap groups it counts in (one per cap label, or per label
value of a ``key:*`` cap; ids into Compiled.group_cap) and the indices of the boosts and
buries that move it."""
EMPTY: frozenset[str] = frozenset()


class Compiled:
    """A plan made ready to apply: the factors' logarithms, the caps' prefixes, the pins
    in slot order, and each item's profile, cached per catalogue snapshot (at most
    MAX_PROFILES items; the catalogue bounds them too)."""

    def __init__(self, plan: RulePlan) -> None:
        self.plan = plan
        self.log_factors = [np.float32(math.log(s.rule.factor)) for s in plan.factors]
        self.caps = [
            (s.rule.label[:-1] if s.rule.label.endswith(PER_VALUE) else s.rule.label,
             s.rule.label.endswith(PER_VALUE), s.rule.max_items)
            for s in plan.caps
        ]  # fmt: skip
        self.pins = sorted(plan.pins, key=lambda s: s.rule.slot)
        self.moved = [PAST[s.rule.kind] for s in plan.factors]
        self._shift: tuple[tuple[tuple[int, int], object], np.ndarray] | None = None
        """Per ((model version, its rows), catalogue snapshot): log(factor) per row."""
        self._profiles: dict[str, Profile] = {}
        self._snapshot: object = None
        self._groups: dict[tuple[int, str], int] = {}
        self.group_cap: list[int] = []
        """Per cap group id: the index of its cap (so its limit and its rule)."""
        self.group_limit: list[int] = []

    def has_shift(self, model: ServingModel, catalogue: Catalogue) -> bool:
        found = self._shift
        return (
            found is not None
            and found[0][0] == (model.version, len(model.rows))
            and found[0][1] is catalogue.snapshot
        )

    def shift(self, model: ServingModel, catalogue: Catalogue) -> np.ndarray:
        """float32 [N+1]: every row's summed log(factor), built once per model version and
        catalogue snapshot (the labels' rows ready in the catalogue's cache)."""
        found = self._shift
        if found is not None and self.has_shift(model, catalogue):
            return found[1]
        shift = np.zeros(len(model.bundle.vocab) + 1, np.float32)
        for sourced, log_factor in zip(self.plan.factors, self.log_factors, strict=True):
            rows = catalogue.label_rows(model.version, model.rows, sourced.rule.label)
            shift[rows] += log_factor
        self._shift = (((model.version, len(model.rows)), catalogue.snapshot), shift)
        return shift

    def profiles(self, snapshot: Any) -> dict[str, Profile]:
        """The cached profiles under ``snapshot`` (emptied when the catalogue changed)."""
        if snapshot is not self._snapshot:
            self._profiles, self._snapshot = {}, snapshot
        return self._profiles

    def _group(self, cap: int, value: str) -> int:
        key = (cap, value)
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = len(self.group_cap)
            self.group_cap.append(cap)
            self.group_limit.append(self.caps[cap][2])
        return found

    def build(self, item: str, snapshot: Any) -> Profile:
        labels = snapshot.labels.get(item, EMPTY)
        groups: list[int] = []
        for i, (label, per_value, _) in enumerate(self.caps):
            if per_value:
                groups.extend(self._group(i, own) for own in labels if own.startswith(label))
            elif label in labels:
                groups.append(self._group(i, label))
        factors = tuple(i for i, s in enumerate(self.plan.factors) if s.rule.label in labels)
        found = (tuple(groups), factors)
        profiles = self.profiles(snapshot)
        if len(profiles) < MAX_PROFILES:
            profiles[item] = found
        return found


class Steering:
    """One request's rules (a shared compiled plan) and the effects they had."""

    def __init__(self, compiled: Compiled, catalogue: Catalogue) -> None:
        self.compiled = compiled
        self.plan = compiled.plan
        self.catalogue = catalogue
        self.effects: list[Effect] = []
        self._masked: tuple[np.ndarray, dict[str, int]] | None = None

    def _profile(self, item: str) -> Profile:
        snapshot = self.catalogue.snapshot
        found = self.compiled.profiles(snapshot).get(item)
        return found if found is not None else self.compiled.build(item, snapshot)

    async def prepare(self, model: ServingModel | None) -> None:
        """Readies the boosted and buried labels' model rows off the event loop (once per
        model version and catalogue snapshot: the summed shift is kept after)."""
        if (
            model is not None
            and self.plan.factors
            and not self.compiled.has_shift(model, self.catalogue)
        ):
            await self.catalogue.prepare_labels(model.version, model.rows, self.plan.labels)

    def _effect(self, item: str, sourced: Sourced, effect: str) -> None:
        if len(self.effects) >= MAX_EFFECTS:
            return
        self.effects.append(Effect(item, sourced, effect))

    # --- boost and bury ----------------------------------------------------------------

    def adjust_rows(self, model: ServingModel, scores: np.ndarray, *, logits: bool) -> None:
        """Moves the scores (float32 [N+1] over ``model``'s rows, masked by the eligibility
        rule, in place) of every row carrying a boosted or buried label: + log(factor)
        for logits, x factor for popularity shares. The masked array is kept: a pin's
        eligibility is then one lookup."""
        self._masked = (scores, model.rows)
        if not self.plan.factors:
            return
        shift = self.compiled.shift(model, self.catalogue)
        if logits:
            scores += shift  # -inf (ineligible) stays -inf
        else:
            scores *= np.exp(shift)

    def adjust_items(self, items: Items) -> Items:
        """The same on an id list of popularity shares, re-sorted best first."""
        factors = self.plan.factors
        moved = []
        for item, score in items:
            for i in self._profile(item)[1]:
                score *= factors[i].rule.factor
            moved.append((item, score))
        moved.sort(key=lambda entry: -entry[1])
        return moved

    # --- caps --------------------------------------------------------------------------

    def choose(self, ranked: Iterable[tuple[str, float]], k: int) -> Items:
        """The first k of ``ranked`` (best first) that no cap refuses; the boosts and
        buries that moved each chosen item, and the caps that left items out, are
        recorded as effects."""
        chosen: Items = []
        self._walk(ranked, k, chosen, {})
        return chosen

    def choose_rows(
        self, scores: np.ndarray, vocab: list[str], k: int, top: Callable[..., np.ndarray]
    ) -> Items:
        """``choose`` over the unmasked rows of ``scores`` (row r is vocab[r-1]), best
        first: the best 2k at once, four times more while the caps thin the list out
        (``top``: rank.top_k)."""
        if not self.plan.caps and not self.plan.factors:  # pins only: the plain top k
            rows = top(scores, k)
            names = [vocab[r - 1] for r in rows.tolist()]
            return list(zip(names, scores[rows].tolist(), strict=True))
        chosen: Items = []
        counts: dict[int, int] = {}
        fetch, done = 2 * k, 0
        while True:
            rows = top(scores, fetch)
            batch = rows[done:]
            names = [vocab[r - 1] for r in batch.tolist()]
            self._walk(zip(names, scores[batch].tolist(), strict=True), k, chosen, counts)
            if len(chosen) >= k or len(rows) < fetch or fetch >= scores.shape[0]:
                return chosen
            done, fetch = len(rows), min(scores.shape[0], fetch * 4)

    def _walk(
        self,
        ranked: Iterable[tuple[str, float]],
        k: int,
        chosen: Items,
        counts: dict[int, int],
    ) -> None:
        compiled, snapshot = self.compiled, self.catalogue.snapshot
        profiles = compiled.profiles(snapshot)
        factors, caps, moved_as = self.plan.factors, self.plan.caps, compiled.moved
        limits, group_cap = compiled.group_limit, compiled.group_cap
        effects = self.effects
        for item, score in ranked:
            if len(chosen) == k:
                return
            profile = profiles.get(item)
            if profile is None:
                profile = compiled.build(item, snapshot)
            groups, moved = profile
            if groups:
                refused = -1
                for group in groups:
                    if counts.get(group, 0) >= limits[group]:
                        refused = group
                        break
                if refused >= 0:
                    if len(effects) < MAX_EFFECTS:
                        effects.append(Effect(item, caps[group_cap[refused]], "left out"))
                    continue
                for group in groups:
                    counts[group] = counts.get(group, 0) + 1
            if moved and len(effects) < MAX_EFFECTS:
                effects.extend(Effect(item, factors[i], moved_as[i]) for i in moved)
            chosen.append((item, score))

    # --- pins --------------------------------------------------------------------------

    def _allows(self, item: str, allows: Callable[[str], bool]) -> bool:
        """Eligibility of a pinned item: its row of the masked scores when the model
        knows it (the rule already applied there), else the rule by id."""
        if self._masked is not None:
            scores, rows = self._masked
            row = rows.get(item)
            if row is not None:
                return bool(scores[row] > -np.inf)
        return allows(item)

    def pin(self, items: Items, k: int, allows: Callable[[str], bool]) -> Items:
        """Each pinned item at its slot (the first pin of a slot wins; a list shorter than
        the slot gets it last), if the eligibility rule allows it. A pinned item takes the
        score of the item whose place it took, so the list stays sorted."""
        if not self.compiled.pins:
            return items
        claimed: dict[int, tuple[str, Sourced]] = {}
        pinned: set[str] = set()
        for sourced in self.compiled.pins:
            rule = sourced.rule
            if rule.slot > k or rule.slot in claimed or rule.item_id in pinned:
                continue
            if not self._allows(rule.item_id, allows):
                continue
            claimed[rule.slot] = (rule.item_id, sourced)
            pinned.add(rule.item_id)
        if not claimed:
            return items
        # A pinned item a cap left out is in the list after all: only the pin is its effect.
        if any(e.effect == "left out" and e.item_id in pinned for e in self.effects):
            self.effects = [
                e for e in self.effects if not (e.item_id in pinned and e.effect == "left out")
            ]
        scores = [score for _, score in items]
        out = [entry for entry in items if entry[0] not in pinned]
        for slot in sorted(claimed):  # each insertion leaves the earlier pins in place
            item, sourced = claimed[slot]
            if slot - 1 <= len(out):
                score = scores[min(slot, len(scores)) - 1] if scores else 0.0
                out.insert(slot - 1, (item, score))
                self._effect(item, sourced, f"pinned at {slot}")
            else:  # the list is shorter than the slot: the pin closes up behind it
                out.append((item, scores[-1] if scores else 0.0))
                self._effect(item, sourced, f"pinned at {len(out)}")
        return out[:k]
