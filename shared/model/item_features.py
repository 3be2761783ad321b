"""Item properties as model input: each item's properties as a few integer tokens.

The sequence model (shared/model/sasrec.py) represents an item by its id embedding plus
the mean of its property tokens' embeddings, on the input side (history events) and the
output side (scored items) alike, as the feature-level SASRec variants do (FDSA, Zhang
et al., IJCAI 2019; RecBole's SASRecF; Transformers4Rec's side features summed into the
item embedding). An item the model never saw in training has no trained id embedding,
but its properties give it a vector: training drops the id part of a share of items
(DropoutNet, Volkovs et al., NeurIPS 2017) so that a vector from properties alone sits
on the same scale as a full one.

Tokens, per property (shared/model/properties.py):

- **categorical** ``genre: [Comedy, Drama]``: ``genre=Comedy``, ``genre=Drama``;
- **numeric** ``year: 1995``: ``year#b``, ``b`` its bucket among NUMERIC_BUCKETS quantile
  buckets of that key's values in the training catalogue;
- **text** ``title: "Toy Story"``: ``title~toy``, ``title~story`` (its first TEXT_WORDS
  words, lower-cased, letters and digits).

The vocabulary is fixed at training: the tokens at least MIN_ITEMS items carry, at most
MAX_VOCAB (most frequent first); token 0 pads. A token outside it (a new brand, a word
never seen) is dropped: it was never learnt. An item has at most MAX_TOKENS tokens,
categorical first, then numeric, then text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.model.properties import Properties

NUMERIC_BUCKETS = 8
TEXT_WORDS = 8
MIN_ITEMS = 2
MAX_VOCAB = 50_000
MAX_TOKENS = 16
WORD = re.compile(r"[a-z0-9]+")


def _raw_tokens(properties: Properties, edges: Mapping[str, list[float]]) -> list[str]:
    categorical: list[str] = []
    numeric: list[str] = []
    text: list[str] = []
    for key, value in sorted(properties.items()):
        if isinstance(value, list):
            categorical.extend(f"{key}={v}" for v in value)
        elif isinstance(value, float | int):
            if key in edges:
                numeric.append(f"{key}#{bisect_right(edges[key], float(value))}")
        else:
            text.extend(f"{key}~{w}" for w in WORD.findall(value.lower())[:TEXT_WORDS])
    return categorical + numeric + text


@dataclass
class ItemFeatures:
    """The token vocabulary and numeric bucket edges a model was trained with."""

    vocab: dict[str, int] = field(default_factory=dict)
    """Token -> id (1..V); 0 pads."""
    edges: dict[str, list[float]] = field(default_factory=dict)
    """Per numeric key, the inner edges of its quantile buckets."""

    @classmethod
    def learn(cls, catalogue: Iterable[Properties]) -> ItemFeatures:
        """The vocabulary of a catalogue's properties (module docstring)."""
        items = list(catalogue)
        numbers: dict[str, list[float]] = {}
        for properties in items:
            for key, value in properties.items():
                if isinstance(value, float | int) and not isinstance(value, bool):
                    numbers.setdefault(key, []).append(float(value))
        edges = {
            key: sorted(set(np.quantile(values, np.linspace(0, 1, NUMERIC_BUCKETS + 1)[1:-1])))
            for key, values in numbers.items()
        }
        counts: Counter[str] = Counter()
        for properties in items:
            counts.update(set(_raw_tokens(properties, edges)))
        kept = [t for t, n in sorted(counts.items(), key=lambda e: (-e[1], e[0])) if n >= MIN_ITEMS]
        return cls({token: n for n, token in enumerate(kept[:MAX_VOCAB], start=1)}, edges)

    @property
    def size(self) -> int:
        """Embedding rows the tokens need: the vocabulary and the padding row."""
        return len(self.vocab) + 1

    def __bool__(self) -> bool:
        return bool(self.vocab)

    def tokens(self, properties: Properties) -> list[int]:
        """An item's token ids (at most MAX_TOKENS; unknown tokens dropped)."""
        found = [self.vocab[t] for t in _raw_tokens(properties, self.edges) if t in self.vocab]
        return list(dict.fromkeys(found))[:MAX_TOKENS]

    def table(self, items: list[str], properties: Mapping[str, Properties]) -> np.ndarray:
        """int64 [len(items) + 1, MAX_TOKENS]: row r holds items[r - 1]'s tokens, padded
        with 0 (row 0, padding, has none)."""
        out = np.zeros((len(items) + 1, MAX_TOKENS), np.int64)
        for row, item in enumerate(items, start=1):
            found = self.tokens(properties.get(item, {}))
            out[row, : len(found)] = found
        return out

    def to_json(self) -> dict[str, Any]:
        return {"tokens": sorted(self.vocab, key=self.vocab.__getitem__), "edges": self.edges}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ItemFeatures:
        tokens = list(data.get("tokens", []))
        edges = {k: [float(x) for x in v] for k, v in dict(data.get("edges", {})).items()}
        return cls({token: n for n, token in enumerate(tokens, start=1)}, edges)
