"""What a training run reads of the catalogue: the snapshot it records, and the item
properties the model learns from (shared/model/item_features.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from shared.model.item_features import ItemFeatures
from shared.storage import item_store
from shared.storage.engine import session_scope
from worker.dataset import Split


def item_features(
    engine: Engine, split: Split, report: Callable[..., None]
) -> tuple[ItemFeatures, np.ndarray] | None:
    """The catalogue's property vocabulary and its token table over the split's items,
    when the catalogue has properties (the model then learns from them); else None."""
    with session_scope(engine) as session:
        properties = item_store.item_properties(session)
    if not properties:
        return None
    features = ItemFeatures.learn(properties.values())
    if not features:
        return None
    tokens = features.table(split.vocab.items, properties)
    covered = int((tokens[1:, 0] != 0).sum())
    report(
        0.04,
        f"item properties: {len(features.vocab):,} tokens from {len(properties):,} items; "
        f"{covered:,} of the {split.num_items:,} trained items carry some",
    )
    return features, tokens


def catalogue_snapshot(engine: Engine) -> dict[str, Any]:
    """Which catalogue a training run saw: its entries and its newest change."""
    with session_scope(engine) as session:
        entries, newest = item_store.catalogue_stamp(session)
    return {"items": entries, "changed_at": newest.isoformat() if newest else None}
