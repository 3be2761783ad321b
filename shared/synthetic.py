"""Deterministic synthetic interaction data with real sequential structure.

How it is generated (every draw comes from one numpy Generator seeded with ``seed``):

- The catalogue has ``n_topics`` topics of ``items_per_topic`` items each. Within a topic
  the items form an ordered series (think episodes or a course): item j is usually
  followed by item j+1.
- Items have a long-tail popularity: Zipf weights (exponent 1.1) over a random permutation.
- Each user prefers 1-3 topics (Dirichlet weights).
- A user's sequence starts at a popular item of a preferred topic. Each next event is
  - with p=0.55 the next item of the current series (a Markov transition),
  - with p=0.20 a popularity-weighted item of the same topic,
  - with p=0.17 a jump to another preferred topic (popularity-weighted),
  - with p=0.08 a globally popular item (noise).
- Sequence lengths are ``min_length`` + Geometric(1/``extra_length``), capped at
  ``max_length`` (by default 12 + Geometric(1/30), at most 120: about 42 events per user;
  tests make sparse and dense logs by changing them).
- Event times increase by 1-600 minutes per event from a per-user start in 2026.

A sequence model can learn the series transitions and the user's topics; popularity
cannot, so on this data SASRec beats popularity by a wide margin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SyntheticEvent:
    event_id: str
    user_id: str
    item_id: str
    kind: str
    value: float
    timestamp_ms: int


@dataclass(frozen=True)
class SyntheticItem:
    item_id: str
    title: str
    labels: list[str]


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 2000
    n_topics: int = 20
    items_per_topic: int = 30
    seed: int = 7
    min_length: int = 12
    extra_length: float = 30.0
    """Mean of the geometric part of a user's sequence length."""
    max_length: int = 120

    @property
    def n_items(self) -> int:
        return self.n_topics * self.items_per_topic


def item_id(topic: int, position: int) -> str:
    return f"i{topic:03d}-{position:03d}"


def catalogue(spec: SyntheticSpec) -> list[SyntheticItem]:
    return [
        SyntheticItem(item_id(t, p), f"Topic {t} part {p + 1}", [f"topic-{t}"])
        for t in range(spec.n_topics)
        for p in range(spec.items_per_topic)
    ]


def events(spec: SyntheticSpec) -> Iterator[SyntheticEvent]:
    """Yields every event, user by user, each user's events in time order."""
    rng = np.random.default_rng(spec.seed)
    n_t, n_p = spec.n_topics, spec.items_per_topic
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** 1.1
    popularity = popularity[rng.permutation(spec.n_items)].reshape(n_t, n_p)
    topic_pop = popularity / popularity.sum(axis=1, keepdims=True)
    global_pop = (popularity / popularity.sum()).ravel()
    kinds = np.array(["view", "click", "purchase"])
    for u in range(spec.n_users):
        n_pref = int(rng.integers(1, 4))
        topics = rng.choice(n_t, size=n_pref, replace=False)
        weights = rng.dirichlet(np.ones(n_pref))
        length = min(spec.max_length, spec.min_length + int(rng.geometric(1 / spec.extra_length)))
        topic = int(topics[rng.choice(n_pref, p=weights)])
        pos = int(rng.choice(n_p, p=topic_pop[topic]))
        t_ms = EPOCH_MS + int(rng.integers(0, 300 * 86_400_000))
        for i in range(length):
            kind = str(kinds[rng.choice(3, p=[0.6, 0.3, 0.1])])
            yield SyntheticEvent(
                event_id=f"demo-u{u:05d}-{i:03d}",
                user_id=f"u{u:05d}",
                item_id=item_id(topic, pos),
                kind=kind,
                value=1.0,
                timestamp_ms=t_ms,
            )
            t_ms += int(rng.integers(1, 601)) * 60_000
            r = rng.random()
            if r < 0.55:
                pos = (pos + 1) % n_p
            elif r < 0.75:
                pos = int(rng.choice(n_p, p=topic_pop[topic]))
            elif r < 0.92:
                topic = int(topics[rng.choice(n_pref, p=weights)])
                pos = int(rng.choice(n_p, p=topic_pop[topic]))
            else:
                flat = int(rng.choice(n_t * n_p, p=global_pop))
                topic, pos = divmod(flat, n_p)
