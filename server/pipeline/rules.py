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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy.engine import Engine

from server.catalogue import Catalogue
from server.pipeline.request import RecommendQuery
from server.served_model import ServingModel
from shared.model.rules import PER_VALUE, Rule, RulePlan, RuleSet, Sourced
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
        self.sets: tuple[RuleSet, ...] = ()
        self.loads = 0
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
                self.sets = tuple(await loop.run_in_executor(self._executor, self._read))
                self.loads += 1
            except Exception as exc:
                log.warning("rule sets not reloaded (the last ones stay): %s", exc)

    def _read(self) -> list[RuleSet]:
        with session_scope(self._engine) as session:
            return rule_store.list_rule_sets(session)

    def changed(self) -> None:
        """A change was announced (called on the event loop): reload in the background."""
        asyncio.get_running_loop().create_task(self.reload())

    def active(self, now: datetime | None = None) -> list[RuleSet]:
        when = now or self._clock()
        return [rule_set for rule_set in self.sets if rule_set.active(when)]

    def plan(self, query: RecommendQuery) -> Steering | None:
        """The rules that apply to ``query`` (validated), or None when none does."""
        plan = RulePlan()
        for label, factor in query.boost:
            plan.add(Rule("boost", label=label, factor=factor), REQUEST)
        for label, factor in query.bury:
            plan.add(Rule("bury", label=label, factor=factor), REQUEST)
        if not query.skip_rule_sets and self.sets:
            for rule_set in self.active():
                for rule in rule_set.rules:
                    plan.add(rule, f"rule set {rule_set.name}")
        return Steering(plan, self._catalogue) if plan else None


@dataclass
class Steering:
    """One request's plan and the effects it had."""

    plan: RulePlan
    catalogue: Catalogue
    effects: list[dict[str, str]] = field(default_factory=list)

    def labels_of(self, item_id: str) -> frozenset[str]:
        return self.catalogue.snapshot.labels.get(item_id, frozenset())

    async def prepare(self, model: ServingModel | None) -> None:
        """Readies the boosted and buried labels' model rows off the event loop."""
        if model is not None and self.plan.factors:
            await self.catalogue.prepare_labels(model.version, model.rows, self.plan.labels)

    def _effect(self, item: str, sourced: Sourced, effect: str) -> None:
        if len(self.effects) >= MAX_EFFECTS:
            return
        self.effects.append(
            {"item_id": item, "rule": sourced.rule.describe(), "source": sourced.source,
             "effect": effect}
        )  # fmt: skip

    # --- boost and bury ----------------------------------------------------------------

    def adjust_rows(self, model: ServingModel, scores: np.ndarray, *, logits: bool) -> None:
        """Moves the scores (float32 [N+1] over ``model``'s rows, in place) of every row
        carrying a boosted or buried label: + log(factor) for logits, x factor for
        popularity shares."""
        for sourced in self.plan.factors:
            rows = self.catalogue.label_rows(model.version, model.rows, sourced.rule.label)
            if not rows.size:
                continue
            if logits:
                scores[rows] += np.float32(math.log(sourced.rule.factor))
            else:
                scores[rows] *= np.float32(sourced.rule.factor)

    def adjust_items(self, items: Items) -> Items:
        """The same on an id list of popularity shares, re-sorted best first."""
        factors = self.plan.factors
        moved = []
        for item, score in items:
            labels = self.labels_of(item)
            for sourced in factors:
                if sourced.rule.label in labels:
                    score *= sourced.rule.factor
            moved.append((item, score))
        moved.sort(key=lambda entry: -entry[1])
        return moved

    def note_factors(self, items: Items) -> None:
        """Records, for every listed item, the boosts and buries that moved it."""
        for item, _ in items:
            labels = self.labels_of(item)
            for sourced in self.plan.factors:
                if sourced.rule.label in labels:
                    self._effect(item, sourced, PAST[sourced.rule.kind])

    # --- caps --------------------------------------------------------------------------

    def choose(self, ranked: Iterable[tuple[str, float]], k: int) -> Items:
        """The first k of ``ranked`` (best first) that no cap refuses."""
        if not self.plan.caps:
            out: Items = []
            for entry in ranked:
                out.append(entry)
                if len(out) == k:
                    break
            return out
        counts: dict[tuple[int, str], int] = {}
        chosen: Items = []
        for item, score in ranked:
            if len(chosen) == k:
                break
            groups = list(self._cap_groups(item, self.labels_of(item)))
            refused = next(
                (self.plan.caps[i] for i, group in groups
                 if counts.get((i, group), 0) >= self.plan.caps[i].rule.max_items),
                None,
            )  # fmt: skip
            if refused is not None:
                self._effect(item, refused, "left out")
                continue
            for key in groups:
                counts[key] = counts.get(key, 0) + 1
            chosen.append((item, score))
        return chosen

    def _cap_groups(self, item: str, labels: frozenset[str]) -> Iterator[tuple[int, str]]:
        """(cap index, the label value it counts) for each cap the item falls under."""
        for i, sourced in enumerate(self.plan.caps):
            label = sourced.rule.label
            if label.endswith(PER_VALUE):
                prefix = label[:-1]  # "brand:"
                for own in labels:
                    if own.startswith(prefix):
                        yield i, own
            elif label in labels:
                yield i, label

    # --- pins --------------------------------------------------------------------------

    def pin(self, items: Items, k: int, allows: Callable[[str], bool]) -> Items:
        """Each pinned item at its slot (the first pin of a slot wins; a list shorter than
        the slot gets it last), if the eligibility rule allows it. A pinned item takes the
        score of the item whose place it took, so the list stays sorted."""
        if not self.plan.pins:
            return items
        claimed: dict[int, tuple[str, Sourced]] = {}
        pinned: set[str] = set()
        for sourced in sorted(self.plan.pins, key=lambda s: s.rule.slot):
            rule = sourced.rule
            if rule.slot > k or rule.slot in claimed or rule.item_id in pinned:
                continue
            if not allows(rule.item_id):
                continue
            claimed[rule.slot] = (rule.item_id, sourced)
            pinned.add(rule.item_id)
        if not claimed:
            return items
        # A pinned item a cap left out is in the list after all: only the pin is its effect.
        self.effects = [
            e for e in self.effects if not (e["item_id"] in pinned and e["effect"] == "left out")
        ]
        rest = iter([entry for entry in items if entry[0] not in pinned])
        scores = [score for _, score in items]
        out: Items = []
        for slot in range(1, k + 1):
            if slot in claimed:
                item, sourced = claimed[slot]
                score = (
                    scores[slot - 1] if slot - 1 < len(scores) else (scores[-1] if scores else 0.0)
                )
                out.append((item, score))
                self._effect(item, sourced, f"pinned at {slot}")
            else:
                entry = next(rest, None)
                if entry is None:
                    # Shorter than the slots: the remaining pins close up behind.
                    for later in sorted(s for s in claimed if s > slot):
                        item, sourced = claimed[later]
                        score = scores[-1] if scores else 0.0
                        out.append((item, score))
                        self._effect(item, sourced, f"pinned at {len(out)}")
                    break
                out.append(entry)
        return out

    def by_item(self) -> dict[str, list[dict[str, str]]]:
        found: dict[str, list[dict[str, str]]] = {}
        for effect in self.effects:
            found.setdefault(effect["item_id"], []).append(effect)
        return found
