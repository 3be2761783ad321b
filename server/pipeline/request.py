"""What goes into and comes out of the request pipeline: typed, free of gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shared.model.rules import Effect


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
    boost: Sequence[tuple[str, float]] = ()
    """(label, factor in (1, 100]) pairs: business rules of this request alone."""
    bury: Sequence[tuple[str, float]] = ()
    """(label, factor in [0.01, 1)) pairs."""
    skip_rule_sets: bool = False
    """Rank without the server's rule sets (the request's own boosts still apply)."""
    shown_cap: int = 0
    """Shown-item capping: 0 the server's setting, -1 off, N this cap."""
    shown_window_hours: float = 0.0
    """0: the server's window."""


@dataclass(frozen=True)
class SimilarQuery:
    """SimilarItems: items like ``item_ids`` (their vectors averaged)."""

    item_ids: Sequence[str]
    k: int = 0
    user_id: str = ""
    exclude_item_ids: Sequence[str] = ()
    candidate_item_ids: Sequence[str] = ()
    allow_seen: bool = False
    include_titles: bool = False
    include_labels: Sequence[str] = ()
    exclude_labels: Sequence[str] = ()


@dataclass
class Similar:
    items: list[tuple[str, float]]
    model_version: int
    unknown_item_ids: list[str] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)


class Support(NamedTuple):
    """A history event supporting a recommended item (see shared/model/explain.py)."""

    item_id: str
    title: str
    weight: float
    events_ago: int


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
    rule_effects: list[Effect] = field(default_factory=list)
    """What the business rules did: item, rule (and where it came from) and effect."""


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
    deleted_user_events: int = 0
    """Refused: their user was deleted (DeleteUser) after the event's time."""
