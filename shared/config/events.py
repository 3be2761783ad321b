"""What each kind of event means (RECSERVE_EVENTS__*): a role and a weight.

A **positive** event says the user wanted the item (a click, a purchase, a high rating);
a **negative** one says they did not (a dislike, a return, a low rating). A negative is
never a training target and is left out of the model's input, in training and serving
alike, and the item is never recommended to that user again, whatever ``allow_seen``
says. Kinds not in the table are positive with weight 1.0, so a log with no kinds (or
kinds of its own) trains as before.

``ratings`` maps the ``value`` of events of kind ``rating`` to a role by range, first
match wins; ranges that no rule covers fall back to the kind table.

The **weight** of a positive event scales its term in training's loss: each target's
cross-entropy is multiplied by it, and the batch's loss is the weighted mean (the sum of
weight x loss over the sum of the weights), so the weights' scale does not change the
learning rate, and a log whose events all weigh the same trains exactly as an unweighted
one. The defaults only make ``dislike``, ``not_interested`` and ``return`` negative, so
an existing log trains as before; a shop sets its funnel, for example
``RECSERVE_EVENTS__KINDS='{"purchase": {"weight": 1.0}, "add_to_cart": {"weight": 0.5},
"view": {"weight": 0.1}, "return": {"role": "negative"}}'`` (docs/configuration.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["positive", "negative"]


class EventKind(BaseModel):
    role: Role = "positive"
    weight: float = Field(1.0, gt=0.0, le=100.0)


class RatingRange(BaseModel):
    """Ratings from ``low`` to ``high`` (both included) have this role and weight."""

    low: float
    high: float
    role: Role = "positive"
    weight: float = Field(1.0, gt=0.0, le=100.0)


def _default_kinds() -> dict[str, EventKind]:
    negative = EventKind(role="negative")
    return {"dislike": negative, "not_interested": negative, "return": negative}


class EventSettings(BaseModel):
    kinds: dict[str, EventKind] = Field(default_factory=_default_kinds)
    """Role and weight per event kind; kinds not listed are positive with weight 1.0."""
    ratings: list[RatingRange] = Field(default_factory=list)
    """Roles of ``rating`` events by value, e.g. 4..5 positive, 1..2 negative."""

    def role(self, kind: str, value: float) -> tuple[Role, float]:
        """The role and weight of an event of ``kind`` with ``value``."""
        if kind == "rating":
            for rule in self.ratings:
                if rule.low <= value <= rule.high:
                    return rule.role, rule.weight
        entry = self.kinds.get(kind)
        return (entry.role, entry.weight) if entry is not None else ("positive", 1.0)

    def negative(self, kind: str, value: float) -> bool:
        return self.role(kind, value)[0] == "negative"

    def weight(self, kind: str, value: float) -> float:
        return self.role(kind, value)[1]

    @property
    def weighted(self) -> bool:
        """Whether any positive kind or rating range weighs other than 1.0 (training
        then reads each event's weight)."""
        weights = [k.weight for k in self.kinds.values() if k.role == "positive"]
        weights += [r.weight for r in self.ratings if r.role == "positive"]
        return any(w != 1.0 for w in weights)
