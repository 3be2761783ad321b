"""Items added to the catalogue after a model was trained, scored by that model at once.

A model trained with item properties (shared/model/item_features.py) carries an item
encoder (item_encoder.onnx): property tokens in, the item's row of the scoring table out.
When the catalogue changes, every loaded model with an encoder takes on the catalogue's
items that it has no row for and that have properties, up to MAX_EXTRA_ITEMS:

1. their properties are read and turned into tokens with the model's own vocabulary, and
   the encoder gives their vectors (in the executor, off the event loop);
2. the backend is given the tokens of every added item first, so that a history holding
   one (rows above N) is encoded with it;
3. then the model is replaced by a copy with the items appended (rows, vocabulary, item
   table, popularity 0), through the registry's lock, wherever it is referenced. A
   request that holds the old object keeps a consistent view; the next one sees the
   items.

Rows are only ever appended: an item keeps its row while the model is served. An added
item whose properties change is re-encoded in place (in the copy). An item the model was
trained with keeps the vector it was trained with until the next training. With an item
index, added items are scored exactly beside it (the index holds the trained items).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from server.catalogue import Catalogue, Snapshot
from server.model_loader import unavailable_rows
from server.registry import ModelRegistry
from server.served_model import ServingModel
from shared.model.bundle import MAX_EXTRA_ITEMS
from shared.model.item_features import MAX_TOKENS
from shared.storage import item_store
from shared.storage.engine import session_scope

log = logging.getLogger(__name__)

ENCODE_CHUNK = 4096


class AddedItems:
    """What one model version has taken on: each added item's tokens and properties
    version, in row order (row N+1 first)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.tokens = np.zeros((0, MAX_TOKENS), np.int64)
        self.versions: dict[str, int] = {}


class NewItems:
    def __init__(
        self,
        catalogue: Catalogue,
        registry: ModelRegistry,
        engine: Engine,
        executor: Executor,
        *,
        poll_s: float = 2.0,
        encoder_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._registry = registry
        self._engine = engine
        self._executor = executor
        self._poll_s = poll_s
        self._encoder_factory = encoder_factory or _onnx_encoder
        self._encoders: dict[int, Any] = {}
        self._added: dict[int, AddedItems] = {}
        self._seen: dict[int, tuple[int, Snapshot]] = {}
        """Per version: (its rows, the snapshot) last brought up to date."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="new-items")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            try:
                await self.update()
            except Exception as exc:  # the models keep serving what they have
                log.warning("items added to the catalogue not taken on yet: %s", exc)
            await asyncio.sleep(self._poll_s)

    def _models(self) -> list[ServingModel]:
        registry = self._registry
        found = [registry.current, *(arm.model for arm in registry.arms)]
        if registry.shadow is not None:
            found.append(registry.shadow.model)
        unique = {id(m): m for m in found if m is not None and m.bundle.features is not None}
        return list(unique.values())

    async def update(self) -> None:
        """Brings every loaded model with an item encoder up to the catalogue."""
        snapshot = self._catalogue.snapshot
        live = set()
        for model in self._models():
            live.add(model.version)
            if self._seen.get(model.version) == (len(model.rows), snapshot):
                continue
            await self._registry.extend(model.version, lambda m: self._extended(m, snapshot))
        for version in set(self._added) - live:  # retired models
            self._added.pop(version, None)
            self._encoders.pop(version, None)
            self._seen.pop(version, None)

    async def _extended(self, model: ServingModel, snapshot: Snapshot) -> ServingModel | None:
        loop = asyncio.get_running_loop()
        added = self._added.setdefault(model.version, AddedItems())
        if len(added.items) != len(model.rows) - model.trained_items:
            added = self._added[model.version] = AddedItems()  # a model loaded anew
        found = await loop.run_in_executor(self._executor, self._read, model, snapshot, added)
        self._seen[model.version] = (len(model.rows), snapshot)
        if found is None:
            return None
        new_items, tokens, versions = found
        table = await loop.run_in_executor(self._executor, self._table, model, tokens)
        model.backend.set_extra_tokens(tokens)  # first: the new rows are encodable
        added.items = [*added.items, *new_items]
        added.tokens, added.versions = tokens, versions
        extended = model.with_items(new_items, table)
        extended.unavailable_rows = unavailable_rows(self._registry.unavailable, extended.rows)
        self._seen[model.version] = (len(extended.rows), snapshot)
        log.info(
            "model version %s: %d items added after training (%d in all)",
            model.version,
            len(new_items),
            len(added.items),
        )
        return extended

    def _read(
        self, model: ServingModel, snapshot: Snapshot, added: AddedItems
    ) -> tuple[list[str], np.ndarray, dict[str, int]] | None:
        """(items new to the model, every added item's tokens, their versions), or None
        when nothing is new and no added item changed."""
        features = model.bundle.features
        assert features is not None
        rows, versions = model.rows, added.versions
        candidates = [i for i, _, _ in snapshot.entries if i not in rows or i in versions]
        with session_scope(self._engine) as session:
            entries = item_store.get_items(session, item_ids=candidates)
        room = MAX_EXTRA_ITEMS - len(added.items)
        tokens = added.tokens.copy()
        versions = dict(versions)
        new_items: list[str] = []
        new_tokens: list[np.ndarray] = []
        changed = False
        for row in entries:
            found = features.tokens(row.properties or {})
            vector = np.zeros(MAX_TOKENS, np.int64)
            vector[: len(found)] = found
            if row.item_id in versions:
                if versions[row.item_id] != row.properties_version:
                    tokens[added.items.index(row.item_id)] = vector
                    versions[row.item_id] = row.properties_version
                    changed = True
            elif found and len(new_items) < room:
                new_items.append(row.item_id)
                new_tokens.append(vector)
                versions[row.item_id] = row.properties_version
        if not new_items and not changed:
            return None
        if new_tokens:
            tokens = np.concatenate([tokens, np.stack(new_tokens)])
        return new_items, tokens, versions

    def _table(self, model: ServingModel, tokens: np.ndarray) -> np.ndarray:
        """The item table: the trained rows, then every added item's encoded row."""
        encoder = self._encoders.get(model.version)
        if encoder is None:
            encoder = self._encoders[model.version] = self._encoder_factory(
                str(model.bundle.encoder_path)
            )
        vectors = [
            encoder(tokens[start : start + ENCODE_CHUNK])
            for start in range(0, len(tokens), ENCODE_CHUNK)
        ]
        trained = model.bundle.item_embeddings[: model.trained_items + 1]
        return np.ascontiguousarray(np.concatenate([trained, *vectors]), dtype=np.float32)


def _onnx_encoder(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """item_encoder.onnx in an ONNX Runtime session on one thread: tokens -> vectors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def encode(tokens: np.ndarray) -> np.ndarray:
        (vectors,) = session.run(None, {"tokens": tokens.astype(np.int64, copy=False)})
        return np.asarray(vectors, np.float32)

    return encode
