"""The exploration slot, a rank step after the model's ranking: the last
``server.exploration_slots`` places of a list go to items new since the model was trained
(catalogue entries it does not know, the most recently popular first) that the request's
eligibility rule allows, until the next retraining learns them. Each takes the score of
the item whose place it took, so the list stays sorted. An item a business rule pinned
keeps its place: the slots go to the last places that are not pinned."""

from __future__ import annotations

from server.catalogue import Catalogue
from server.pipeline.eligibility import Eligible
from server.pipeline.request import Recommendation
from server.registry import ModelRegistry


class ExplorationSlots:
    def __init__(self, slots: int, catalogue: Catalogue, registry: ModelRegistry) -> None:
        self.slots = slots
        self._catalogue = catalogue
        self._registry = registry

    async def place(self, result: Recommendation, eligible: Eligible, k: int) -> None:
        if not self.slots or result.source not in ("model", "popularity"):
            return
        model = self._registry.loaded(result.model_version)
        if model is None:
            return
        new = await self._catalogue.new_items(model.version, model.rows)
        picks: list[str] = []
        for item in new:
            if len(picks) == min(self.slots, k):
                break
            if eligible.allows(item):
                picks.append(item)
        if not picks:
            return
        pinned = {e.item_id for e in result.rule_effects if e.effect.startswith("pinned")}
        if pinned:
            self._around_pins(result, picks, pinned, k)
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

    @staticmethod
    def _around_pins(result: Recommendation, picks: list[str], pinned: set[str], k: int) -> None:
        """The slots at the last places that no pin holds."""
        items = result.items
        size = min(k, len(items) + len(picks))
        final: list[tuple[str, float] | None] = [*items[:size], *[None] * (size - len(items))]
        free = [i for i in range(size) if final[i] is None or final[i][0] not in pinned]  # type: ignore[index]
        targets = sorted(free[-len(picks) :]) if picks else []
        floor = items[-1][1] if items else 0.0
        placed = []
        for position, item in zip(targets, picks, strict=False):
            old = final[position]
            final[position] = (item, old[1] if old is not None else floor)
            placed.append(item)
        result.items = [entry for entry in final if entry is not None]
        result.explored = set(placed)
