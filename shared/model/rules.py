"""Business rules: how the business steers a ranked list (docs/rules.md).

A rule is one of four kinds:

- **boost** (``label``, ``factor`` in (1, 100]) and **bury** (``factor`` in [0.01, 1)):
  every candidate carrying the label has its probability under the model's softmax over
  the candidates multiplied by ``factor``, which is the same as adding log(factor) to its
  logit. So a boost always helps and a bury always hurts, whatever the sign of the raw
  score. Where popularity ranks (a user without history, or no model yet) the score is a
  share of events, a probability already, and is multiplied by the factor.
- **cap** (``label``, ``max_items``): at most ``max_items`` items carrying the label in a
  list. A label ``key:*`` caps per value of the property ``key``: ``brand:*`` at 2 allows
  two items of each brand.
- **pin** (``item_id``, ``slot``): the item at that place (1 = first) of every list it is
  eligible for. Pins come after the caps and may exceed one.

Rules come from two places: a request's own ``boost`` and ``bury`` (at most
MAX_REQUEST_FACTORS together), and the server's named rule sets (at most MAX_RULES rules
each, at most MAX_RULE_SETS sets), each active within its schedule (from, until; open at
either end). A list is ranked in this order: eligibility -> boost/bury -> caps -> pins ->
exploration slots. Every error names the field and what would be accepted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

from shared.wire.errors import InvalidArgument

KINDS = ("boost", "bury", "cap", "pin")
MAX_RULES = 200
MAX_RULE_SETS = 100
MAX_REQUEST_FACTORS = 20
MIN_FACTOR, MAX_FACTOR = 0.01, 100.0
MAX_CAP = 1000
MAX_SLOT = 1000
MAX_LABEL_LEN = 64
MAX_ITEM_ID_LEN = 256
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PER_VALUE = ":*"
"""A cap label ending so (``brand:*``) caps each value of the property separately."""


@dataclass(frozen=True)
class Rule:
    kind: str
    label: str = ""
    factor: float = 1.0
    max_items: int = 0
    item_id: str = ""
    slot: int = 0

    def describe(self) -> str:
        """The rule as an operator writes it: ``boost brand:acme x2``, ``cap brand:* 2``,
        ``pin sku-1 at 1``."""
        if self.kind in ("boost", "bury"):
            return f"{self.kind} {self.label} x{self.factor:g}"
        if self.kind == "cap":
            return f"cap {self.label} {self.max_items}"
        return f"pin {self.item_id} at {self.slot}"

    def to_json(self) -> dict[str, object]:
        if self.kind in ("boost", "bury"):
            return {"kind": self.kind, "label": self.label, "factor": self.factor}
        if self.kind == "cap":
            return {"kind": "cap", "label": self.label, "max_items": self.max_items}
        return {"kind": "pin", "item_id": self.item_id, "slot": self.slot}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Rule:
        return cls(
            kind=str(data["kind"]),
            label=str(data.get("label", "")),
            factor=float(data.get("factor", 1.0)),  # type: ignore[arg-type]
            max_items=int(data.get("max_items", 0)),  # type: ignore[call-overload]
            item_id=str(data.get("item_id", "")),
            slot=int(data.get("slot", 0)),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class RuleSet:
    name: str
    rules: tuple[Rule, ...]
    active_from: datetime | None = None
    active_until: datetime | None = None
    updated_at: datetime | None = None
    updated_by: str = ""
    description: str = ""

    def active(self, now: datetime) -> bool:
        """Within its schedule at ``now`` (from inclusive, until exclusive)."""
        if self.active_from is not None and now < self.active_from:
            return False
        return self.active_until is None or now < self.active_until


@dataclass(frozen=True)
class Sourced:
    """A rule and where it came from: ``request``, or ``rule set NAME``."""

    rule: Rule
    source: str
    described: str = ""
    """``rule.describe()``, once (an audit entry names it)."""

    @cached_property
    def audit_fields(self) -> str:
        """``"rule": ..., "source": ...`` as JSON text, encoded once per rule: every
        audit entry of this rule repeats it."""
        return json.dumps({"rule": self.described, "source": self.source})[1:-1]


class Effect(NamedTuple):
    """What one rule did to one item of a list: the audit kept with the impression."""

    item_id: str
    sourced: Sourced
    effect: str

    def to_json(self) -> dict[str, str]:
        sourced = self.sourced
        return {
            "item_id": self.item_id,
            "rule": sourced.described,
            "source": sourced.source,
            "effect": self.effect,
        }


def audit_json(effects: Sequence[Effect]) -> str:
    """``[e.to_json() for e in effects]`` as JSON text, built from each rule's encoded
    fields: the impression writer encodes thousands of these a second, off the event loop
    but under the interpreter lock."""
    quote = encode_basestring_ascii  # what json.dumps does to a string, without its layers
    entries = [
        f'{{"item_id": {quote(e.item_id)}, {e.sourced.audit_fields}, "effect": {quote(e.effect)}}}'
        for e in effects
    ]
    return f"[{', '.join(entries)}]"


@dataclass
class RulePlan:
    """Every rule that applies to one request, in the order they are applied."""

    factors: list[Sourced] = field(default_factory=list)
    caps: list[Sourced] = field(default_factory=list)
    pins: list[Sourced] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.factors or self.caps or self.pins)

    @property
    def labels(self) -> list[str]:
        """The labels whose items the boosts and buries need (the catalogue prepares
        their model rows before ranking)."""
        return list(dict.fromkeys(s.rule.label for s in self.factors))

    def add(self, rule: Rule, source: str) -> None:
        sourced = Sourced(rule, source, rule.describe())
        if rule.kind in ("boost", "bury"):
            self.factors.append(sourced)
        elif rule.kind == "cap":
            self.caps.append(sourced)
        else:
            self.pins.append(sourced)


def check_name(field_name: str, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            field_name,
            f"is {name!r}; accepted: 1..64 characters of letters, digits, '_', '.' and "
            "'-', starting with a letter or digit",
        )


def _check_label(field_name: str, label: str, *, per_value: bool) -> None:
    if not label or len(label) > MAX_LABEL_LEN or not label.isprintable():
        raise InvalidArgument(
            field_name,
            f"is {label!r}; accepted: a label of 1..{MAX_LABEL_LEN} printable characters",
        )
    if label.endswith(PER_VALUE) and not per_value:
        raise InvalidArgument(
            field_name, f"is {label!r}; 'key:*' (per value) is accepted by caps only"
        )


def check_factor(field_name: str, kind: str, factor: float) -> None:
    low, high = (1.0, MAX_FACTOR) if kind == "boost" else (MIN_FACTOR, 1.0)
    inside = math.isfinite(factor) and (
        low < factor <= high if kind == "boost" else low <= factor < high
    )
    if not inside:
        accepted = f"(1, {MAX_FACTOR:g}]" if kind == "boost" else f"[{MIN_FACTOR:g}, 1)"
        raise InvalidArgument(
            field_name,
            f"is {factor}; accepted for a {kind}: a factor in {accepted} (it multiplies "
            "the item's probability among the candidates)",
        )


def check_rule(field_name: str, rule: Rule) -> None:
    """One rule of a rule set (``field_name``: ``rules[3]``)."""
    if rule.kind not in KINDS:
        raise InvalidArgument(
            f"{field_name}.kind", f"is {rule.kind!r}; accepted: one of {', '.join(KINDS)}"
        )
    if rule.kind in ("boost", "bury"):
        _check_label(f"{field_name}.label", rule.label, per_value=False)
        check_factor(f"{field_name}.factor", rule.kind, rule.factor)
    elif rule.kind == "cap":
        _check_label(f"{field_name}.label", rule.label, per_value=True)
        if not 1 <= rule.max_items <= MAX_CAP:
            raise InvalidArgument(
                f"{field_name}.max_items", f"is {rule.max_items}; accepted: 1..{MAX_CAP}"
            )
    else:
        item = rule.item_id
        if not item or len(item) > MAX_ITEM_ID_LEN or not item.isprintable():
            raise InvalidArgument(
                f"{field_name}.item_id",
                f"is {item!r}; accepted: an item id of 1..{MAX_ITEM_ID_LEN} printable characters",
            )
        if not 1 <= rule.slot <= MAX_SLOT:
            raise InvalidArgument(
                f"{field_name}.slot", f"is {rule.slot}; accepted: 1..{MAX_SLOT} (1 is first)"
            )


def check_rule_set(rule_set: RuleSet) -> None:
    """A whole rule set, before it is stored."""
    check_name("name", rule_set.name)
    if not 1 <= len(rule_set.rules) <= MAX_RULES:
        raise InvalidArgument("rules", f"has {len(rule_set.rules)} rules; accepted: 1..{MAX_RULES}")
    slots: dict[int, int] = {}
    for i, rule in enumerate(rule_set.rules):
        check_rule(f"rules[{i}]", rule)
        if rule.kind == "pin":
            if rule.slot in slots:
                raise InvalidArgument(
                    f"rules[{i}].slot",
                    f"is {rule.slot}, pinned already by rules[{slots[rule.slot]}]; "
                    "accepted: one pin per slot in a rule set",
                )
            slots[rule.slot] = i
    start, end = rule_set.active_from, rule_set.active_until
    if start is not None and end is not None and end <= start:
        raise InvalidArgument(
            "active_until", "is not after active_from; accepted: a later time, or none (open)"
        )
    if len(rule_set.description) > 512:
        raise InvalidArgument("description", "is over 512 characters long")


def request_rules(
    boost: Sequence[tuple[str, float]], bury: Sequence[tuple[str, float]]
) -> list[Rule]:
    """A request's own boosts and buries, checked (field names as in the request)."""
    if len(boost) + len(bury) > MAX_REQUEST_FACTORS:
        raise InvalidArgument(
            "boost",
            f"and bury hold {len(boost) + len(bury)} entries together; at most "
            f"{MAX_REQUEST_FACTORS} are accepted",
        )
    rules = []
    for kind, entries in (("boost", boost), ("bury", bury)):
        for i, (label, factor) in enumerate(entries):
            _check_label(f"{kind}[{i}].label", label, per_value=False)
            check_factor(f"{kind}[{i}].factor", kind, factor)
            rules.append(Rule(kind, label=label, factor=factor))
    return rules
